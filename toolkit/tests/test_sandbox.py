"""The sandbox's command line: what it binds, what it drops, the limits it sets.

These check the argv (also for GPU servers, which this machine does not have); the
behaviour inside is tested end to end, with a hostile model on a real Triton, in
tests/security/test_sandbox.py.
"""

from __future__ import annotations

import subprocess

import pytest

from toolkit import sandbox as sb
from toolkit.sandbox import GIB, Sandbox, SandboxError, SandboxPolicy


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def command(**kwargs) -> list[str]:
    options = {"read_only": ["/opt/model-repo"], "env": {"PATH": "/usr/bin"}}
    options.update(kwargs)
    return Sandbox(bwrap="/usr/bin/bwrap", existing_tasks=10, **options).wrap(
        ["/opt/tritonserver", "--model-repository=/opt/model-repo"]
    )


def test_as_root_it_drops_to_nobody_with_no_capabilities() -> None:
    argv = command(as_root=True)
    assert "--unshare-user" not in argv  # root keeps the host's user namespace to mount
    setpriv = argv.index(next(a for a in argv if a.endswith("/setpriv")))
    assert argv[argv.index("--cap-add") + 1] == "CAP_SETUID,CAP_SETGID"
    assert argv[setpriv + 1 : setpriv + 8] == [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    assert argv[-2:] == ["/opt/tritonserver", "--model-repository=/opt/model-repo"]


def test_unprivileged_it_uses_a_user_namespace_and_keeps_its_uid() -> None:
    argv = command(as_root=False)
    assert "--unshare-user" in argv and "--disable-userns" in argv
    assert "--cap-add" not in argv
    assert not any(a.endswith("/setpriv") for a in argv)


@pytest.mark.parametrize("as_root", [True, False])
def test_namespaces_environment_and_filesystem(as_root: bool) -> None:
    argv = command(as_root=as_root)
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent"):
        assert flag in argv
    assert "--new-session" in argv and "--clearenv" in argv
    assert argv.index("--clearenv") < argv.index("--setenv")
    assert pairs(argv, "--setenv") == [("PATH", "/usr/bin")]
    binds = pairs(argv, "--ro-bind")
    assert ("/usr", "/usr") in binds and ("/opt/model-repo", "/opt/model-repo") in binds
    assert ("/etc/ld.so.cache", "/etc/ld.so.cache") in binds
    assert not [b for b in binds if b[0] in ("/etc", "/etc/passwd", "/", "/home", "/root")]
    assert not pairs(argv, "--bind")  # nothing of the host is writable
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert tmpfs == ["/dev/shm", "/tmp", "/run/berth"]
    for mount in tmpfs:  # each size-capped
        at = argv.index(mount)
        assert argv[at - 3] == "--size" and int(argv[at - 2]) > 0
    assert argv[argv.index("--remount-ro") + 1] == "/"
    assert "--share-net" not in argv and "--dev-bind" not in argv


def test_limits_are_set_with_prlimit() -> None:
    policy = SandboxPolicy(max_processes=100, max_file_bytes=GIB, max_open_files=512)
    argv = command(as_root=True, policy=policy)
    prlimit = argv.index(next(a for a in argv if a.endswith("/prlimit")))
    assert argv[prlimit + 1 : prlimit + 7] == [
        "--nproc=110",  # the 10 tasks the uid already runs, plus the allowance
        f"--fsize={GIB}",
        "--nofile=512",
        "--core=0",
        f"--as={16 * GIB}",
        "--",
    ]


def test_a_gpu_sandbox_binds_the_nvidia_devices_and_lifts_the_address_space_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-caps"]
    real_glob = sb.glob.glob
    monkeypatch.setattr(sb.glob, "glob", lambda p: nodes if p == "/dev/nvidia*" else real_glob(p))
    argv = command(as_root=True, gpu=True)
    assert sorted(pairs(argv, "--dev-bind")) == sorted((n, n) for n in nodes)
    assert ("/sys", "/sys") in pairs(argv, "--ro-bind")  # NVML reads the PCI topology
    assert not [a for a in argv if a.startswith("--as=")]
    assert "--unshare-net" in argv


def test_policy_from_the_environment() -> None:
    policy = SandboxPolicy.from_environ(
        {
            "BERTH_SANDBOX_MAX_PROCESSES": "64",
            "BERTH_SANDBOX_SCRATCH_SIZE": "256MiB",
            "BERTH_SANDBOX_MAX_ADDRESS_SPACE": "0",
        }
    )
    assert policy.max_processes == 64
    assert policy.scratch_bytes == 256 * 1024**2
    assert policy.max_address_space == 0
    assert SandboxPolicy.from_environ({}) == SandboxPolicy()
    with pytest.raises(SandboxError, match="BERTH_SANDBOX_MAX_PROCESSES"):
        SandboxPolicy.from_environ({"BERTH_SANDBOX_MAX_PROCESSES": "lots"})


def test_the_opt_out_must_be_spelled_out() -> None:
    assert not sb.sandbox_disabled({})
    assert not sb.sandbox_disabled({sb.UNSAFE_OPT_OUT: "0"})
    assert sb.sandbox_disabled({sb.UNSAFE_OPT_OUT: "1"})


def test_the_environment_keeps_only_what_is_listed() -> None:
    parent = {
        "DJANGO_SECRET_KEY": "s",
        "DATABASE_URL": "postgres://x",
        "AWS_SECRET_ACCESS_KEY": "a",
        "BERTH_DATAPLANE_ADMIN_TOKEN": "t",
        "OPENBLAS_NUM_THREADS": "2",
    }
    env = sb.clean_environment({"HOME": "/tmp"}, parent=parent)
    assert env == {"HOME": "/tmp", "OPENBLAS_NUM_THREADS": "2"}


def test_without_bubblewrap_triton_refuses_to_start_and_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from toolkit.triton import TritonProcess, TritonStartError

    monkeypatch.setattr(sb.shutil, "which", lambda name, path=None: None)
    monkeypatch.delenv(sb.UNSAFE_OPT_OUT, raising=False)
    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        sb.find_bwrap()
    process = TritonProcess(tmp_path)
    with pytest.raises(TritonStartError, match="bubblewrap") as refused:
        process.start(timeout=30)
    assert "UNSANDBOXED" in str(refused.value) or sb.UNSAFE_OPT_OUT in str(refused.value)
    assert not process.alive and process.pid is None


def test_the_python_path_is_the_standard_library_and_site_packages_only() -> None:
    from pathlib import Path

    project = Path(__file__).resolve().parents[2]
    paths = sb.python_paths()
    assert paths and all(not p.startswith(str(project) + "/toolkit") for p in paths)
    assert str(project) not in paths
    assert any(p.endswith("site-packages") for p in paths)


@pytest.mark.skipif(not sb.shutil.which("bwrap"), reason="bubblewrap is not installed")
def test_a_sandboxed_command_sees_no_host_and_no_network(tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host file")
    argv = Sandbox(read_only=[], env={"PATH": "/usr/bin:/bin"}).wrap(
        [
            "/bin/sh",
            "-c",
            f"cat {secret} /etc/passwd 2>/dev/null; echo x > /probe 2>/dev/null && echo wrote; "
            "id -u; cat /proc/net/dev | grep -c :",
        ]
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert "host" not in done.stdout and "wrote" not in done.stdout and "root:" not in done.stdout
    assert lines[-2] != "0"  # not root
    assert lines[-1] == "1"  # one interface: its own loopback
