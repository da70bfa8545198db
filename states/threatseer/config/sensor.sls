{#- The sensor's sensor.yaml from pillar threatseer:sensor:config. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/macros.jinja" import config with context %}
include:
  - {{ tplroot }}.package
{{ config('sensor') }}
