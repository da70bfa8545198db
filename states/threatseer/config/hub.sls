{#- The hub's user, its sensor allow-list (from the mine) and hub.yaml from pillar
    threatseer:hub:config. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import ts, mined_key with context %}
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

{#- One "key  # minion" a line, sorted by minion, so an unchanged fleet rewrites nothing. A mine
    value is a minion's own say: only a valid key is taken (anything else is named in a comment
    line and in the state's comment), the minion id is reduced to a safe name, and the file's
    text is one quoted scalar: nothing a minion publishes can add a state or a line. #}
{%- set lines = ['# Managed by Salt (threatseer formula): sensor public keys from the mine',
                 '# (' ~ al.mine_function ~ ' on ' ~ al.tgt_type ~ " '" ~ al.target ~ "')."] %}
{%- set refused = [] %}
{%- for minion, value in keys|dictsort %}
{%-   set name = minion|string|regex_replace('[^A-Za-z0-9._@:-]', '_') %}
{%-   set key = mined_key(value) %}
{%-   if key %}
{%-     do lines.append(key ~ '  # ' ~ name) %}
{%-   else %}
{%-     do refused.append(name) %}
{%-     do lines.append('# refused: ' ~ name ~ ' (its mine value is not a 40-character Z85 key)') %}
{%-   endif %}
{%- endfor %}
threatseer-hub-allow-list:
  file.managed:
    - name: {{ ts.paths.allow_list }}
    - makedirs: True
    - mode: '0644'
    - contents: {{ (lines|join('\n') ~ '\n')|yaml_dquote }}
{%- if refused %}

threatseer-hub-allow-list-refused:
  test.show_notification:
    - text: {{ ('mine values refused (not a 40-character Z85 key): ' ~ refused|join(', '))|yaml_dquote }}
{%- endif %}
{{ config('hub') }}
