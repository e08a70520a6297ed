"""Kernel images for all three arches from the pinned Debian .debs, pushed to the real registry.

Downloads are cached legitimately in the work cache, keyed by the pinned sha256 (and
re-verified on every use); the build and the checks run every time.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import io
import json
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pkgsetkit
import pytest
from pkgsetkit import PackageSet

from pkgtool.kernel import bzimage
from pkgtool.kernel.kernel_build import build_kernel
from pkgtool.kernel.kernel_yml import load_kernel_spec

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _get(registry: str, repo: str, what: str, accept: str = "") -> bytes:
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/{what}", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        data: bytes = resp.read()
    return data


def _check_module_exclusion(exclude: tuple[str, ...], release: str, names: list[str], modules_dep: str) -> None:
    """kernel.yml's modules.exclude: matching modules are gone unless a kept one needs them,
    every kept module's dependencies are there, and the depmod index lists what is shipped."""
    prefix = f"lib/modules/{release}/"
    shipped = {n[len(prefix):] for n in names if n.startswith(prefix) and ".ko" in n}
    needs = {m.strip(): deps.split() for m, _, deps in (line.partition(":") for line in modules_dep.splitlines())}
    assert set(needs) == shipped
    assert all(set(deps) <= shipped for deps in needs.values())
    needed = {d for deps in needs.values() for d in deps}
    matched = {m for m in shipped if any(fnmatch.fnmatchcase(m, p) for p in exclude)}
    assert matched <= needed, sorted(matched - needed)[:5]
    assert len(shipped) > 1000 and any("virtio" in m for m in shipped)  # a lean VM still has its drivers


def test_kernel_images_for_three_arches(registry: str, unique_repo: str, tmp_path: Path) -> None:
    spec = dataclasses.replace(load_kernel_spec(REPO / "kernel/bookworm-6.1/kernel.yml"), image=unique_repo)
    result = build_kernel(spec, registry=registry)
    assert not result.skipped and result.tag.startswith(f"{spec.version}-")
    index = json.loads(_get(registry, unique_repo, f"manifests/{result.tag}",
                            "application/vnd.oci.image.index.v1+json"))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64", "s390x"]
    expected_file = {"amd64": "x86 boot executable bzImage", "arm64": "ARM64 boot executable Image",
                     "s390x": "Linux S390"}
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        manifest = json.loads(_get(registry, unique_repo, f"manifests/{entry['digest']}",
                                   "application/vnd.oci.image.manifest.v1+json"))
        layer = _get(registry, unique_repo, f"blobs/{manifest['layers'][0]['digest']}")
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tf:
            names = tf.getnames()
            kernel = tf.extractfile("kernel").read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=tf.extractfile("kernel.tar")) as modules:  # type: ignore[arg-type]
                module_names = modules.getnames()
                dep_name = next(n for n in module_names if n.endswith("/modules.dep"))
                modules_dep = modules.extractfile(dep_name).read().decode()  # type: ignore[union-attr]
            vmlinux = tf.extractfile("vmlinux").read(4) if "vmlinux" in names else b""  # type: ignore[union-attr]
        want = ["System.map", "config", "kernel", "kernel.tar"] + (["vmlinux"] if arch == "amd64" else [])
        assert sorted(names) == want
        release = next(r for r in (a.release for a in result.arches) if r.endswith(arch))
        assert f"lib/modules/{release}/modules.dep" in module_names
        _check_module_exclusion(spec.modules_exclude, release, module_names, modules_dep)
        kfile = tmp_path / f"kernel-{arch}"
        kfile.write_bytes(kernel)
        described = subprocess.run(["file", "-b", str(kfile)], capture_output=True, text=True, check=True).stdout
        assert expected_file[arch] in described, described
        if arch == "amd64":
            assert kernel[0x202:0x206] == b"HdrS" and vmlinux == b"\x7fELF"
        if arch == "arm64":
            assert kernel[0x38:0x3C] == b"ARMd"

    again = build_kernel(spec, registry=registry)
    assert again.skipped and again.tag == result.tag


def test_virt_flavour_keeps_the_include_closure_and_ships_small_kernels(pkgset: PackageSet, unique_repo: str) -> None:
    """The VM flavour as the session published it (examples/ use it): per arch, the modules
    are exactly what kernel.yml's include globs and their dependencies name, built-in
    entries need no file, arm64's kernel is a gzip'd Image, and no /vmlinux is shipped.
    Built again from the .debs into another repository, every arch's layer has the same
    digest (the image config differs: it names the repository)."""
    spec = load_kernel_spec(pkgset.root / pkgsetkit.KERNEL / "kernel.yml")
    patterns = [glob.pattern for glob in spec.modules_include]
    repository, digest = pkgset.kernel_ref.split("/", 1)[1].split("@")
    repository = repository.rsplit(":", 1)[0]
    again = build_kernel(dataclasses.replace(spec, image=unique_repo), registry=pkgset.registry)
    assert not again.skipped

    def layers(repo: str, ref: str) -> list[str]:
        index = json.loads(_get(pkgset.registry, repo, f"manifests/{ref}", "application/vnd.oci.image.index.v1+json"))
        return [json.loads(_get(pkgset.registry, repo, f"manifests/{m['digest']}",
                                "application/vnd.oci.image.manifest.v1+json"))["layers"][0]["digest"]
                for m in index["manifests"]]

    assert layers(unique_repo, again.tag) == layers(repository, digest)
    index = json.loads(_get(pkgset.registry, repository, f"manifests/{digest}", "application/vnd.oci.image.index.v1+json"))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64", "s390x"]
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        manifest = json.loads(_get(pkgset.registry, repository, f"manifests/{entry['digest']}",
                                   "application/vnd.oci.image.manifest.v1+json"))
        layer = _get(pkgset.registry, repository, f"blobs/{manifest['layers'][0]['digest']}")
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tf:
            assert sorted(tf.getnames()) == ["System.map", "config", "kernel", "kernel.tar"], arch
            kernel = tf.extractfile("kernel").read()  # type: ignore[union-attr]
            config = tf.extractfile("config").read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=tf.extractfile("kernel.tar")) as modules:  # type: ignore[arg-type]
                index_files = {n.rsplit("/", 1)[1]: modules.extractfile(n).read().decode()  # type: ignore[union-attr]
                               for n in modules.getnames() if n.endswith(("/modules.dep", "/modules.builtin"))}
        needs = {m.strip(): deps.split() for m, _, deps in (line.partition(":") for line in index_files["modules.dep"].splitlines())}
        builtin = index_files["modules.builtin"].split()
        wanted = {m for m in needs if any(fnmatch.fnmatchcase(m, p) for p in patterns)}
        depended = {d for deps in needs.values() for d in deps}
        assert set(needs) == wanted | depended, sorted(set(needs) - wanted - depended)[:5]
        assert all(set(deps) <= set(needs) for deps in needs.values())
        for pattern in patterns:
            assert any(fnmatch.fnmatchcase(m, pattern) for m in [*needs, *builtin]), (arch, pattern)
        assert 100 < len(needs) < 200 and "kernel/drivers/net/virtio_net.ko" in needs, (arch, len(needs))
        assert b"\nCONFIG_RD_ZSTD=y\n" in config
        if arch == "arm64":
            assert kernel[:2] == b"\x1f\x8b" and gzip.decompress(kernel)[0x38:0x3C] == b"ARMd"
        else:
            assert bzimage.kernel_kind(kernel) == {"amd64": "bzImage", "s390x": "s390-image"}[arch]


def test_an_include_naming_no_module_fails_with_its_kernel_yml_line(registry: str, unique_repo: str,
                                                                     tmp_path: Path) -> None:
    """On Debian's real .deb (amd64 only, to be quick): a typo in modules.include is one line
    naming the kernel.yml line and the package, a non-zero exit, and nothing pushed."""
    text = (REPO / "kernel/bookworm-6.1-virt/kernel.yml").read_text()
    text = text.replace("image: pkgtool/kernel-virt", f"image: {unique_repo}")
    text = text.replace("    - kernel/drivers/net/virtio_net.ko\n", "    - kernel/drivers/net/virtio-net.ko\n")
    arches = text.index("arches:\n")
    text = text[:arches] + "arches:\n" + text[arches:].split("\n  arm64:\n")[0].split("arches:\n", 1)[1] + "\n"
    spec = tmp_path / "kernel.yml"
    spec.write_text(text)
    line = text.splitlines().index("    - kernel/drivers/net/virtio-net.ko") + 1
    virt = load_kernel_spec(REPO / "kernel/bookworm-6.1-virt/kernel.yml")
    index = [g.pattern for g in virt.modules_include].index("kernel/drivers/net/virtio_net.ko")
    proc = subprocess.run([sys.executable, "-m", "pkgtool", "kernel", "build", "--registry", registry, str(spec)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("kernel: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].endswith(f"{spec}:{line}: modules.include[{index}]: 'kernel/drivers/net/virtio-net.ko' matches "
                              f"no module of {virt.arch('amd64').package} (amd64), neither a loadable one nor one "
                              "built into the kernel"), errors[0]
    with pytest.raises(urllib.error.HTTPError):
        _get(registry, unique_repo, "tags/list")
