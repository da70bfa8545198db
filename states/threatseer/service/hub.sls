{#- The hub side of this minion as services: the embedded hub, or the hub cluster roles that
    pillar `roles` lists (gateway, scorer, output-worker; docs/cluster.md). The hub-side
    daemons it does not list are stopped and removed first, so a pillar change plus an apply
    moves a host from the embedded hub to cluster roles and back. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import all_hub_roles, hub_roles, cluster_problem with context %}
{%- from tplroot ~ "/macros.jinja" import service, service_absent with context %}
include:
  - {{ tplroot }}.config.hub

{%- if cluster_problem %}
threatseer-hub-roles-invalid:
  test.fail_without_changes:
    - comment: {{ cluster_problem|yaml_dquote }}
    - require_in:
      - file: threatseer-hub-config
{%- else %}
{%- for daemon in all_hub_roles if daemon not in hub_roles %}
{{ service_absent('hub', daemon, hub_roles) }}
{%- endfor %}
{%- for daemon in hub_roles %}
{{ service('hub', daemon) }}
{%- endfor %}
{%- endif %}
