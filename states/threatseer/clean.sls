{#- Undo the formula: stop and remove the services (sensor, hub, hub cluster roles), then every file, directory, key and
    mine entry it created (and the hub user). System packages stay unless
    `clean_pkgs` is true: other software on the host links against libbpf/libelf too. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import ts, cluster_roles with context %}
{%- from tplroot ~ "/macros.jinja" import service_absent with context %}
{%- set p = ts.paths %}
{%- set mgr = ts.service.manager %}

{%- for role in ('sensor', 'hub') %}
{%- set name = ts[role].service_name %}
{%- set script = p.initd_dir ~ '/' ~ name %}
{%- if mgr in ('systemd', 'sysv') %}
threatseer-clean-{{ role }}-service:
  service.dead:
    - name: {{ name }}
{%- if mgr == 'systemd' %}
    - enable: False
{%- endif %}
    - onlyif: test -e {{ p.unit_dir }}/{{ name }}.service -o -e {{ script }}
    - require_in:
      - file: threatseer-clean-{{ role }}-files
{%- endif %}
{%- if mgr == 'sysv' %}
threatseer-clean-{{ role }}-boot-links:
  cmd.run:
    - name: update-rc.d -f {{ name }} remove
    - onlyif: ls /etc/rc?.d/[SK][0-9][0-9]{{ name }}
    - require_in:
      - file: threatseer-clean-{{ role }}-files
{%- endif %}
{#- Stop through the script too: it knows the pidfile (script mode, or a leftover). #}
threatseer-clean-{{ role }}-stopped:
  cmd.run:
    - name: {{ script }} stop
    - onlyif: {{ script }} status
    - require_in:
      - file: threatseer-clean-{{ role }}-files

threatseer-clean-{{ role }}-files:
  file.absent:
    - names:
      - {{ p.unit_dir }}/{{ name }}.service
      - {{ script }}
      - {{ p.run_dir }}/{{ name }}.pid
      - {{ p.log_dir }}/{{ name }}.log
      - {{ p.config_dir }}/{{ role }}.yaml
      - {{ p.keys_dir }}/{{ role }}.key.pub
      - {{ p.keys_dir }}/{{ role }}.key
{%- set fn = ts[role].curve.mine_function %}
{%- if salt['mine.get'](grains['id'], fn) %}
threatseer-clean-{{ role }}-mine:
  module.run:
    - mine.delete:
      - fun: {{ fn }}
{%- endif %}
{%- endfor %}

{%- for daemon in cluster_roles %}
{{ service_absent('hub', daemon) }}
{%- endfor %}

threatseer-clean-dirs:
  file.absent:
    - names:
      - {{ p.prefix }}
      - {{ p.config_dir }}
      - {{ p.state_dir }}
      - {{ p.log_dir }}
      - {{ p.run_dir }}
    - require:
      - file: threatseer-clean-sensor-files
      - file: threatseer-clean-hub-files
{%- for daemon in cluster_roles %}
      - file: threatseer-{{ daemon }}-absent
{%- endfor %}

{%- if ts.hub.manage_user %}
threatseer-clean-hub-user:
  user.absent:
    - name: {{ ts.hub.user }}
    - require:
      - file: threatseer-clean-dirs
  group.absent:
    - name: {{ ts.hub.group }}
    - require:
      - user: threatseer-clean-hub-user
{%- endif %}

{%- if ts.get('clean_pkgs') and ts.manage_pkgs %}
threatseer-clean-pkgs:
  pkg.removed:
    - pkgs: {{ ts.pkgs|json }}
{%- endif %}
