{#- `threatseer` alone = a sensor (the common case); hubs apply threatseer.hub. #}
{%- set tplroot = tpldir.split('/')[0] %}
include:
  - {{ tplroot }}.sensor
