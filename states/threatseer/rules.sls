{#- The pinned rule bundle on a hub: fetched from the master, verified, activated, and the
    hub restarted (config mode) or published to it (admin mode). Every fetched version stays
    in ${bundles_dir}, so a rollback (pin the previous version, apply) needs no download. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import ts, subst with context %}
{%- set p = ts.paths %}
{%- set r = ts.rules %}
include:
  - {{ tplroot }}.hub

{%- if not r.version %}
threatseer-rules-not-pinned:
  test.fail_without_changes:
    - name: 'pillar threatseer:rules:version is empty: pin the bundle version to activate'
{%- else %}
{%- set base = r.name ~ '-' ~ r.version ~ r.suffix %}
{%- set bundle = p.bundles_dir ~ '/' ~ base %}
{%- set key_file = p.config_dir ~ '/bundle-signing.pub' %}
{%- set names = {'bundle': bundle, 'key_file': key_file, 'name': r.name, 'version': r.version} %}
{%- set verify = subst(r.verify_cmd, names)|load_json %}

threatseer-rules-dir:
  file.directory:
    - name: {{ p.bundles_dir }}
    - makedirs: True
    - mode: '0755'

threatseer-rules-signing-key:
  file.managed:
    - name: {{ key_file }}
    - contents: {{ r.signing_public_key|string|yaml_dquote }}
    - mode: '0644'
    - require:
      - file: threatseer-hub-config-dir

threatseer-rules-bundle:
  file.managed:
    - name: {{ bundle }}
    - source: {{ r.source }}/{{ base }}
    - mode: '0644'
    - require:
      - file: threatseer-rules-dir

{#- Verified once per content: the stamp holds the checksum of what passed. #}
threatseer-rules-verified:
  cmd.run:
    - name: {{ (verify ~ ' && sha256sum ' ~ bundle ~ ' > ' ~ bundle ~ '.verified')|yaml_dquote }}
    - unless: sha256sum --status -c {{ bundle }}.verified
    - require:
      - file: threatseer-rules-bundle
      - file: threatseer-rules-signing-key
      - sls: {{ tplroot }}.package

{%- if r.activate == 'admin' %}
{%- set publish = subst(r.publish_cmd, names)|load_json %}
{%- set active = subst(r.active_cmd, names)|load_json %}
threatseer-rules-active:
  cmd.run:
    - name: {{ publish|yaml_dquote }}
    - unless: {{ (active ~ ' | grep -qwF -- ' ~ r.version)|yaml_dquote }}
    - require:
      - cmd: threatseer-rules-verified
      - {{ 'service' if ts.service.manager in ('systemd', 'sysv') else 'cmd' }}: threatseer-hub-service
{%- else %}
threatseer-rules-active:
  file.symlink:
    - name: {{ p.bundles_dir }}/active{{ r.suffix }}
    - target: {{ bundle }}
    - force: True
    - require:
      - cmd: threatseer-rules-verified

{#- The hub loads the linked bundle at start: restart it when the link moves. #}
extend:
{%- if ts.service.manager in ('systemd', 'sysv') %}
  threatseer-hub-service:
    service.running:
      - watch:
        - file: threatseer-rules-active
{%- else %}
  threatseer-hub-restart:
    cmd.run:
      - onchanges:
        - file: threatseer-rules-active
      - require:
        - file: threatseer-rules-active
{%- endif %}
{%- endif %}
{%- endif %}
