{#- The hub's libraries: the `hub` extra of the installed threatseer (Elasticsearch, Kafka,
    Redis, pySigma, ...), which sensor hosts never install. Re-running changes nothing once
    every package of the extra is present. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import ts with context %}
{%- set inst = ts.install %}
{%- set req = inst.requirement ~ '[hub]' ~ ('==' ~ inst.version if inst.version else '') %}
include:
  - {{ tplroot }}.package

threatseer-package-hub:
  cmd.run:
    - name: {{ ts.pip.command }} install --quiet {{ ts.pip.args }} '{{ req }}'
    - unless: {{ ts.paths.python }} -m threatseer.cli.extras hub
    - require:
      - cmd: threatseer-package
