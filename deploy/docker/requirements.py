"""Print the package's dependencies from pyproject.toml, one per line, optionally without some.

python3 requirements.py pyproject.toml [--without torch] > requirements.txt

The images install the dependencies in a layer of their own (cached until pyproject.toml changes) and the
sgpo wheel with --no-deps on top; the vLLM image leaves out torch (it brings the build vLLM was compiled with).
"""

import re
import sys
import tomllib

args = sys.argv[1:]
without = {args[i + 1] for i, a in enumerate(args) if a == "--without"}
with open(args[0], "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    name = re.match(r"[A-Za-z0-9_.-]+", dep)
    if name and name.group(0).lower() not in without:
        print(dep)
