{#- The hub's CURVE key pair, generated on the minion; its public key goes to the mine. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/macros.jinja" import keypair with context %}
include:
  - {{ tplroot }}.package.hub
{{ keypair('hub') }}
