{#- The hub's user, its sensor allow-list (from the mine) and hub.yaml from pillar
    threatseer:hub:config. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import ts with context %}
{%- from tplroot ~ "/macros.jinja" import config with context %}
{%- set hub = ts.hub %}
{%- set al = hub.allow_list %}
{%- set keys = salt['mine.get'](al.target, al.mine_function, tgt_type=al.tgt_type) or {} %}
include:
  - {{ tplroot }}.package.hub
  - {{ tplroot }}.keys.hub

{%- if hub.manage_user %}
threatseer-hub-user:
  group.present:
    - name: {{ hub.group }}
    - system: True
  user.present:
    - name: {{ hub.user }}
    - gid: {{ hub.group }}
    - system: True
    - home: {{ ts.paths.state_dir }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: threatseer-hub-user
{%- endif %}

{#- One "key  # minion" a line, sorted by minion, so an unchanged fleet rewrites nothing. #}
threatseer-hub-allow-list:
  file.managed:
    - name: {{ ts.paths.allow_list }}
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt (threatseer formula): sensor public keys from the mine
        # ({{ al.mine_function }} on {{ al.tgt_type }} '{{ al.target }}').
{%- for minion, key in keys|dictsort %}
{%-   if key and key is string %}
        {{ key|trim }}  # {{ minion }}
{%-   endif %}
{%- endfor %}
{{ config('hub') }}
