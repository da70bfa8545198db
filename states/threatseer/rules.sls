{#- The pinned rule bundle on a hub, and the site's local rules layer stacked on it: fetched
    from the master, verified, activated, and the hub restarted (config mode) or published to
    it (admin mode). Every fetched version stays in ${bundles_dir}, so a rollback (pin the
    previous version, apply) needs no download. #}
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

{#- The local layer: pinned like the bundle, or none (an active one is taken off). #}
{%- set l = r.local %}
{%- set lbundle = p.bundles_dir ~ '/' ~ l.name ~ '-' ~ l.version ~ r.suffix %}
{%- set lnames = {'bundle': lbundle, 'name': l.name, 'version': l.version,
                  'admin_key': p.admin_key,
                  'key_file': p.local_signing_key if l.signing_public_key else p.signing_key} %}
{%- if l.version %}
threatseer-rules-local-bundle:
  file.managed:
    - name: {{ lbundle }}
    - source: {{ r.source }}/{{ l.name ~ '-' ~ l.version ~ r.suffix }}
    - mode: '0644'
    - require:
      - file: threatseer-rules-dir

threatseer-rules-local-verified:
  cmd.run:
    - name: {{ ((subst(r.verify_cmd, lnames)|load_json) ~ ' && sha256sum ' ~ lbundle ~ ' > '
               ~ lbundle ~ '.verified')|yaml_dquote }}
    - unless: sha256sum --status -c {{ lbundle }}.verified
    - require:
      - file: threatseer-rules-local-bundle
      - file: threatseer-hub-signing-key
      - sls: {{ tplroot }}.package.hub
{%- endif %}

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
{%-   if l.version %}

threatseer-rules-local-not-in-a-cluster:
  test.fail_without_changes:
    - comment: >-
        pillar threatseer:rules:local:version: the scorers of a hub cluster take one announced
        bundle, not a local layer stacked on it (docs/cluster.md); leave it empty there
{%-   endif %}
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
{%- if l.version %}

threatseer-rules-local-active:
  cmd.run:
    - name: {{ (subst(l.activate_cmd, lnames)|load_json)|yaml_dquote }}
    - unless: {{ (active ~ ' | grep -q -- ' ~ ('^\\* local ' ~ l.version ~ ' ')|quote)|yaml_dquote }}
    - require:
      - cmd: threatseer-rules-local-verified
      - cmd: threatseer-rules-active
{%- else %}

threatseer-rules-local-off:
  cmd.run:
    - name: {{ (subst(l.unstack_cmd, lnames)|load_json)|yaml_dquote }}
    - onlyif: {{ (active ~ ' | grep -q -- ' ~ ('^\\* local ')|quote)|yaml_dquote }}
    - require:
      - cmd: threatseer-rules-active
{%- endif %}
{%- else %}
threatseer-rules-active:
  file.symlink:
    - name: {{ p.bundles_dir }}/active{{ r.suffix }}
    - target: {{ bundle }}
    - force: True
    - require:
      - cmd: threatseer-rules-verified

{#- hub.yaml's local_bundle names this link while a layer is pinned. #}
threatseer-rules-local-link:
{%- if l.version %}
  file.symlink:
    - name: {{ p.bundles_dir }}/active-local{{ r.suffix }}
    - target: {{ lbundle }}
    - force: True
    - require:
      - cmd: threatseer-rules-local-verified
{%- else %}
  file.absent:
    - name: {{ p.bundles_dir }}/active-local{{ r.suffix }}
{%- endif %}

{#- The hub loads the linked bundles at start: restart it when a link moves. #}
extend:
{%- if ts.service.manager in ('systemd', 'sysv') %}
  threatseer-hub-service:
    service.running:
      - watch:
        - file: threatseer-rules-active
        - file: threatseer-rules-local-link
{%- else %}
  threatseer-hub-restart:
    cmd.run:
      - onchanges:
        - file: threatseer-rules-active
        - file: threatseer-rules-local-link
      - require:
        - file: threatseer-rules-active
        - file: threatseer-rules-local-link
{%- endif %}
{%- endif %}
{%- endif %}
