{#- The pinned rule bundle on a hub: fetched from the master, verified, activated, and the
    hub restarted (config mode) or published to it (admin mode). Every fetched version stays
    in ${bundles_dir}, so a rollback (pin the previous version, apply) needs no download. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import ts, subst, hub_roles with context %}
{%- set p = ts.paths %}
{%- set r = ts.rules %}
include:
  - {{ tplroot }}.hub

{%- if not r.version %}
threatseer-rules-not-pinned:
  test.fail_without_changes:
    - comment: 'pillar threatseer:rules:version is empty: pin the bundle version to activate'
{%- else %}
{%- set base = r.name ~ '-' ~ r.version ~ r.suffix %}
{%- set bundle = p.bundles_dir ~ '/' ~ base %}
{%- set names = {'bundle': bundle, 'key_file': p.signing_key, 'name': r.name,
                 'version': r.version, 'admin_key': p.admin_key} %}
{%- set verify = subst(r.verify_cmd, names)|load_json %}

threatseer-rules-dir:
  file.directory:
    - name: {{ p.bundles_dir }}
    - makedirs: True
    - mode: '0755'

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
      - file: threatseer-hub-signing-key
      - sls: {{ tplroot }}.package.hub

{%- if 'hub' not in hub_roles %}
{#- A hub cluster: the bundle is announced on the cluster's bundles topic, once per content
    (the stamp holds the checksum announced); every scorer verifies it against its trusted
    signing key, compiles and tests it, then activates it (docs/cluster.md). #}
threatseer-rules-active:
  cmd.run:
    - name: {{ (p.threatseer ~ ' cluster publish-bundle -c ' ~ p.config_dir ~ '/hub.yaml '
                ~ bundle ~ ' && sha256sum ' ~ bundle ~ ' > ' ~ bundle ~ '.announced')|yaml_dquote }}
    - unless: sha256sum --status -c {{ bundle }}.announced
    - require:
      - cmd: threatseer-rules-verified
      - file: threatseer-hub-config
{%- elif r.activate == 'admin' %}
{%- set activate = subst(r.activate_cmd, names)|load_json %}
{%- set active = subst(r.active_cmd, names)|load_json %}
threatseer-rules-active:
  cmd.run:
    - name: {{ activate|yaml_dquote }}
    - unless: {{ (active ~ ' | grep -q -- ' ~ ('^\\* ' ~ r.version ~ ' ')|quote)|yaml_dquote }}
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
