{#- A hub: package, key pair (public key to the mine), allow-list from the mine, hub.yaml,
    running service. Apply after the sensors (their keys must be in the mine) and again when
    sensors join or leave. #}
{%- set tplroot = tpldir.split('/')[0] %}
include:
  - {{ tplroot }}.package.hub
  - {{ tplroot }}.keys.hub
  - {{ tplroot }}.config.hub
  - {{ tplroot }}.service.hub
