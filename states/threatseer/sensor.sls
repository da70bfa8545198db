{#- A sensor: package, key pair (public key to the mine), sensor.yaml, running service. #}
{%- set tplroot = tpldir.split('/')[0] %}
include:
  - {{ tplroot }}.package
  - {{ tplroot }}.keys.sensor
  - {{ tplroot }}.config.sensor
  - {{ tplroot }}.service.sensor
