"""environment.yml (conda) and pyproject.toml must list the same dependencies (with the test and lab extras)."""
import re

import tomllib
import yaml
from conftest import REPO


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"] + extras["test"] + extras["lab"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r): r.replace(" ", "") for r in pip}
    assert listed == wanted
    assert any(str(d).startswith("python=") for d in env["dependencies"])
