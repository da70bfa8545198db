{#- System libraries, a venv and the threatseer package (from the master's wheelhouse or an
    index): the base install, all a sensor needs (a hub adds threatseer.package.hub).
    Re-running changes nothing; a new wheel on the master or a new pinned version reinstalls,
    and the services watching `threatseer-package` restart. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import ts with context %}
{%- set p = ts.paths %}
{%- set inst = ts.install %}
{%- set req = inst.requirement ~ ('==' ~ inst.version if inst.version else '') %}
{%- set pip = ts.pip.command %}
{%- set args = ts.pip.args %}
{#- Installed, importable, and the pinned version (if any): then there is nothing to do. #}
{%- set check = p.python ~ ' -c "import importlib.metadata as m, sys, threatseer.sensor; '
                ~ "sys.exit(0 if '" ~ inst.version ~ "' in ('', m.version('threatseer')) else 1)"
                ~ '"' %}

{%- if ts.manage_pkgs %}
threatseer-system-packages:
  pkg.installed:
    - pkgs: {{ ts.pkgs|json }}
{%- endif %}

threatseer-prefix:
  file.directory:
    - name: {{ p.prefix }}
    - makedirs: True
    - mode: '0755'

threatseer-venv:
  cmd.run:
    - name: {{ ts.python }} -m venv {{ '--system-site-packages ' if inst.system_site_packages else '' }}{{ p.venv }}
    - creates: {{ p.python }}
    - require:
      - file: threatseer-prefix
{%- if ts.manage_pkgs %}
      - pkg: threatseer-system-packages
{%- endif %}

{%- if inst.source == 'wheelhouse' %}
threatseer-wheelhouse:
  file.recurse:
    - name: {{ p.wheelhouse }}
    - source: {{ inst.wheelhouse }}
    - clean: True
    - include_pat: 'E@\.(whl|tar\.gz|zip)$'
    - file_mode: '0644'
    - dir_mode: '0755'
    - require:
      - file: threatseer-prefix
{%- endif %}

{%- if inst.source == 'wheelhouse' %}
{#- The wheelhouse's checksums, remembered in the venv: a new build of the same version on the
    master reinstalls the package (dependencies stay as they are). #}
{%- set stamp = p.venv ~ '/.threatseer-wheelhouse.sha256' %}
{%- set digest = '(cd ' ~ p.wheelhouse ~ ' && sha256sum -- *.whl)' %}
threatseer-package:
  cmd.run:
    - name: {{ (pip ~ ' install --quiet ' ~ args ~ " '" ~ req ~ "' && " ~ pip
                ~ ' install --quiet --force-reinstall --no-deps ' ~ args ~ " '" ~ req ~ "' && "
                ~ digest ~ ' > ' ~ stamp)|yaml_dquote }}
    - unless: {{ (check ~ ' && ' ~ digest ~ ' | cmp -s - ' ~ stamp)|yaml_dquote }}
    - require:
      - cmd: threatseer-venv
      - file: threatseer-wheelhouse
{%- else %}
threatseer-package:
  cmd.run:
    - name: {{ pip }} install --quiet {{ args }} '{{ req }}'
    - unless: {{ check|yaml_dquote }}
    - require:
      - cmd: threatseer-venv
{%- endif %}
