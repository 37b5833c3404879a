"""What can be checked without a container engine: the compose file as Compose v2 resolves it, the Dockerfile's
lint and inputs, and the start script's seeding of the mounted work folder."""

import json
import os
import subprocess
from pathlib import Path

import compose
import pytest
from conftest import REPO

START = REPO / "docker" / "start-workshop.sh"
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"


def resolved_compose(*files: str, **env: str) -> dict:
    """The configuration Docker Compose v2 itself resolves (the official binary; no engine needed)."""
    args = [str(COMPOSE_BINARY)]
    for name in files:
        args += ["-f", str(REPO / name)]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "WORK_DIR", "BASE_IMAGE"))}
    result = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, cwd=REPO,
                            env={**clean_env, **env}, check=True)
    return json.loads(result.stdout)["services"]["jupyter"]


def test_compose_publishes_on_localhost_mounts_work_and_keeps_token_auth():
    service = resolved_compose("docker-compose.yaml")
    assert [(p["host_ip"], p["published"], p["target"]) for p in service["ports"]] == [("127.0.0.1", "8888", 8888)]
    volume = service["volumes"][0]
    assert volume["type"] == "bind" and volume["source"] == str(REPO / "work") and volume["target"] == "/work"
    assert int(service["shm_size"]) >= 1 << 30 and service["init"] is True
    # a container that stops has printed why; restarting it would only print the same message again and again
    assert service["restart"] == "no"
    assert service["environment"]["JUPYTER_TOKEN"] == ""  # empty means: the start script generates one
    assert service["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"
    custom = resolved_compose("docker-compose.yaml", JUPYTER_PORT="9999", WORK_DIR="/tmp/elsewhere")
    assert custom["ports"][0]["published"] == "9999" and custom["volumes"][0]["source"] == "/tmp/elsewhere"


def test_gpu_override_reserves_an_nvidia_gpu():
    service = resolved_compose("docker-compose.yaml", "docker-compose.gpu.yaml")
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_dockerfile_lints_clean_and_its_inputs_exist():
    result = subprocess.run([str(REPO / ".venv" / "bin" / "hadolint"), "Dockerfile"], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (REPO / "Dockerfile").read_text()
    assert "pipenv sync" in text and "pipenv install" not in text  # from the lock, no re-resolving
    # no USER: the start script begins as root, takes on the owner of /work and drops to it (setpriv)
    assert "\nUSER " not in text and "EXPOSE 8888" in text and 'ENTRYPOINT ["start-workshop"]' in text
    assert "setpriv" in START.read_text()
    for source in ("notebooks", "work/utils.py", "work/README.md", "docker/start-workshop.sh", "docker/extra-ca",
                   "docker/jupyter"):
        assert (REPO / source).exists(), source


def seed_folder(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    (seed / "notebooks" / "solutions").mkdir(parents=True)
    (seed / "utils.py").write_text("# utils\n")
    (seed / "README.md").write_text("# readme\n")
    (seed / "notebooks" / "01_task.ipynb").write_text("{}")
    (seed / "notebooks" / "solutions" / "01_task.ipynb").write_text('{"solution": 1}')
    return seed


def run_seed(seed: Path, work: Path, **env: str) -> str:
    result = subprocess.run(["bash", str(START), "seed"], capture_output=True, text=True, check=True,
                            env={**os.environ, "WORK_DIR": str(work), "SEED_DIR": str(seed), **env})
    return result.stdout


def test_start_script_seeds_an_empty_work_folder_and_keeps_edits(tmp_path):
    seed, work = seed_folder(tmp_path), tmp_path / "work"
    output = run_seed(seed, work)
    assert sorted(p.name for p in work.iterdir()) == ["01_task.ipynb", "README.md", "utils.py"]
    assert "seeded" in output
    (work / "utils.py").write_text("# my edits\n")
    (work / "README.md").unlink()
    assert "utils.py" not in run_seed(seed, work)
    assert (work / "utils.py").read_text() == "# my edits\n"  # a student's copy is never overwritten
    assert (work / "README.md").read_text() == "# readme\n"  # a deleted seed file comes back
    assert not (work / "solutions").exists()
    run_seed(seed, work, WORKSHOP_SOLUTIONS="1")
    assert (work / "solutions" / "01_task.ipynb").read_text() == '{"solution": 1}'


def test_start_script_never_starts_without_a_token_and_keeps_it_off_the_command_line():
    text = START.read_text()
    assert 'if [ -z "$token" ]' in text and 'export JUPYTER_TOKEN="$token"' in text
    assert "IdentityProvider.token" not in text and "ServerApp.token" not in text  # `ps` would show it
    assert "allow_remote_access=True" not in text  # keeps jupyter_server's Host-header check


@pytest.mark.parametrize("token", [" ", "short", "a" * 15])
def test_start_script_refuses_a_short_token(tmp_path, token):
    env = {**os.environ, "WORK_DIR": str(tmp_path / "work"), "SEED_DIR": str(seed_folder(tmp_path)),
           "JUPYTER_TOKEN": token, "WORKSHOP_USER": ""}
    result = subprocess.run(["bash", str(START)], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "ERROR: JUPYTER_TOKEN is too short" in result.stderr and "FIX:" in result.stderr
    assert "JupyterLab will be at" not in result.stdout


def test_start_script_stops_with_one_message_when_work_is_not_a_folder(tmp_path):
    (tmp_path / "work").write_text("a file, not a folder")
    result = subprocess.run(["bash", str(START), "seed"], capture_output=True, text=True,
                            env={**os.environ, "WORK_DIR": str(tmp_path / "work"), "WORKSHOP_USER": ""})
    assert result.returncode == 1 and result.stderr.count("ERROR:") == 1 and "It is not a folder" in result.stderr


def test_jupyterlab_settings_disable_the_news_announcements():
    page_config = json.loads((REPO / "docker" / "jupyter" / "labconfig" / "page_config.json").read_text())
    assert page_config["disabledExtensions"] == {"@jupyterlab/apputils-extension:announcements": True}


@pytest.mark.skipif(not (REPO / "docker" / "extra-ca").is_dir(), reason="no extra-ca folder")
def test_no_certificate_is_committed():
    tracked = subprocess.run(["git", "ls-files", "docker/extra-ca"], capture_output=True, text=True, cwd=REPO)
    assert tracked.stdout.split() == ["docker/extra-ca/README.md"]
