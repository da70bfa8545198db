{#- The hub daemon as a service (systemd unit, SysV script or plain script). #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/macros.jinja" import service with context %}
include:
  - {{ tplroot }}.config.hub
{{ service('hub') }}
