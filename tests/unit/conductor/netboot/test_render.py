"""Boot config rendering: every template, refusal/escaping of metacharacters, atomic
idempotent writes, removal, and broken templates caught at start-up."""
import os
import shutil

import pytest

from conductor import errors
from conductor.netboot import render
from conductor.netboot.render import Checked, NodeBoot, Renderer

HTTP = "http://10.0.0.1:8080"
API = "http://10.0.0.1:6385"
MACS = ("52:54:00:12:34:56", "52:54:00:AB:CD:EF")


@pytest.fixture
def renderer(tmp_path):
    r = Renderer(tmp_path / "tftp", tmp_path / "http", HTTP)
    r.check_templates()
    r.install()
    return r


def boot(loader, name="web-1", params=("nofb",), kernel="deploy.kernel",
         ramdisk="deploy.initrd"):
    checked = tuple(render.checked_token(p, "param") for p in (f"ipa-api-url={API}",) + params)
    return NodeBoot("1be26c0b-03f2-4d2d-ae87-c02d7f33c123", name, MACS, loader,
                    render.locate(kernel, loader, HTTP, "kernel"),
                    render.locate(ramdisk, loader, HTTP, "ramdisk"), checked)


def test_generic_files_chain_per_mac_scripts_and_fall_back_to_disk(renderer, tmp_path):
    script = (tmp_path / "tftp" / "boot.ipxe").read_text()
    assert script.startswith("#!ipxe\n")
    assert f"chain --autofree {HTTP}/ipxe/${{mac:hexhyp}}.ipxe || goto nics" in script
    assert f"{HTTP}/ipxe/${{net${{netid}}/mac:hexhyp}}.ipxe" in script
    assert script.rstrip().endswith("exit 1")
    assert (tmp_path / "http" / "boot.ipxe").read_text() == script
    assert "LOCALBOOT 0" in (tmp_path / "tftp" / "pxelinux.cfg" / "default").read_text()
    grub = (tmp_path / "tftp" / "grub" / "grub.cfg").read_text()
    assert 'configfile "$mac_cfg"' in grub and "grub.cfg-01-$m1-$m2" in grub


def test_ipxe_script_per_mac(renderer, tmp_path):
    changed = renderer.write(boot("ipxe"))
    first = tmp_path / "http" / "ipxe" / "52-54-00-12-34-56.ipxe"
    second = tmp_path / "http" / "ipxe" / "52-54-00-ab-cd-ef.ipxe"
    assert changed == [first, second]
    text = first.read_text()
    assert text.startswith("#!ipxe\n")
    assert (f"kernel --name kernel {HTTP}/deploy.kernel initrd=ramdisk "
            f"ipa-api-url={API} nofb BOOTIF=01-52-54-00-12-34-56 || goto retry") in text
    assert f"initrd --name ramdisk {HTTP}/deploy.initrd || goto retry" in text
    assert "iseq ${attempt} 10 && goto giveup ||" in text
    assert "BOOTIF=01-52-54-00-ab-cd-ef" in second.read_text()


def test_pxelinux_config_per_mac(renderer, tmp_path):
    renderer.write(boot("pxelinux", kernel="http://img.example:80/k"))
    text = (tmp_path / "tftp" / "pxelinux.cfg" / "01-52-54-00-12-34-56").read_text()
    assert "  KERNEL http://img.example:80/k\n" in text
    assert f"  APPEND initrd=deploy.initrd ipa-api-url={API} nofb\n" in text
    assert "IPAPPEND 2" in text and "BOOTIF=" not in text.split("IPAPPEND")[0].split("APPEND")[1]


def test_grub_config_per_mac_uses_tftp_paths_and_http_device(renderer, tmp_path):
    renderer.write(boot("grub", kernel="http://10.0.0.2:8080/vmlinuz"))
    text = (tmp_path / "tftp" / "grub" / "grub.cfg-01-52-54-00-ab-cd-ef").read_text()
    assert (f"    linux (http,10.0.0.2:8080)/vmlinuz ipa-api-url={API} nofb "
            "BOOTIF=01-52-54-00-ab-cd-ef\n") in text
    assert "    initrd /deploy.initrd\n" in text


def test_relative_kernel_is_linked_into_the_tftp_root_for_pxe_loaders(renderer, tmp_path):
    (tmp_path / "http" / "deploy.kernel").write_bytes(b"K" * 100)
    renderer.write(boot("pxelinux"))
    linked = tmp_path / "tftp" / "deploy.kernel"
    assert linked.read_bytes() == b"K" * 100
    assert os.stat(linked).st_ino == os.stat(tmp_path / "http" / "deploy.kernel").st_ino


@pytest.mark.parametrize("name", ["x; reboot", "${evil}", "a\nchain http://evil/x", "`id`",
                                  "x' || shell #", "é$(x)"])
def test_node_name_is_escaped_in_every_template(renderer, tmp_path, name):
    for loader in ("ipxe", "pxelinux", "grub"):
        renderer.write(boot(loader, name=name))
    for path in [p for p in (tmp_path).rglob("*") if p.is_file() and "52-54-00-12" in p.name]:
        header = path.read_text().splitlines()[1 if path.suffix == ".ipxe" else 0]
        assert header.startswith("# metalcast: node ")
        shown = header.split("node ")[1].split(" (")[0]
        assert set(shown) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789._-"), (path, shown)
        assert "$" not in header and "`" not in header and ";" not in header


@pytest.mark.parametrize("param", ["a;b", "x=${evil}", "x=1\nchain", "a b", "x='q'",
                                   'x="q"', "x=`id`", "a#b", "x={y}", "a\\b", ""])
def test_kernel_params_with_metacharacters_are_refused(param):
    with pytest.raises(errors.InvalidParameter, match="kernel command line"):
        render.checked_token(param, "kernel_append_params")


@pytest.mark.parametrize("param", ["ipa-agent-token=abc", "root_password=x", "SECRET=1",
                                   "ipmi_passwd=y"])
def test_secrets_never_reach_a_kernel_command_line(param):
    with pytest.raises(errors.InvalidParameter, match="looks like a secret"):
        render.checked_token(param, "kernel_append_params")


@pytest.mark.parametrize("url", ["http://h/${evil}", "http://h/a;b", "http://h/a b",
                                 "ftp://h/k", "http:///k", "http://h/k\n", "file:///etc/x",
                                 "http://h/a&b"])
def test_bad_urls_are_refused(url):
    with pytest.raises(errors.InvalidParameter):
        render.locate(url, "ipxe", HTTP, "driver_info deploy_kernel")


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "a/../../b", "a b", "${x}",
                                  "a;b", ""])
def test_bad_relative_names_are_refused(name):
    with pytest.raises(errors.InvalidParameter):
        render.locate(name, "pxelinux", HTTP, "driver_info deploy_kernel")


@pytest.mark.parametrize("url", ["http://alice:s3cr3t@h/k", "http://alice@h/k",
                                 "http://:s3cr3t@h:8080/k", "https://alice:s3cr3t@[fd00::1]/k",
                                 "http://alice:s3cr3t@h/k;reboot"])
@pytest.mark.parametrize("loader", ["ipxe", "pxelinux", "grub"])
def test_urls_with_credentials_are_refused_without_repeating_them(url, loader):
    """A boot config is served to anyone: a password in its URL would be published."""
    with pytest.raises(errors.InvalidParameter, match="carries credentials") as caught:
        render.locate(url, loader, HTTP, "driver_info deploy_kernel")
    assert "s3cr3t" not in str(caught.value) and "alice" not in str(caught.value)


def test_an_at_sign_in_the_path_is_no_credential():
    assert render.locate("http://h/a@b", "ipxe", HTTP, "k") == "http://h/a@b"


@pytest.mark.parametrize("param", ["ipa-inspection-callback-url=http://u:pw@h/x",
                                   "x=https://u@h"])
def test_kernel_params_with_url_credentials_are_refused(param):
    with pytest.raises(errors.InvalidParameter, match="looks like a secret"):
        render.checked_token(param, "kernel_append_params")


@pytest.mark.parametrize("params, key", [
    ("nofb ipa-api-url=http://evil:6385", "ipa-api-url"),
    ("IPA-API-URL=http://evil:6385", "IPA-API-URL"),
    ("ipa_api_url=http://evil:6385", "ipa_api_url"),
    ("BOOTIF=01-52-54-00-00-00-01", "BOOTIF"), ("bootif=x", "bootif"),
    ("initrd=/evil.img", "initrd")])
def test_parameters_metalcast_sets_are_refused(params, key):
    with pytest.raises(errors.InvalidParameter, match=f"must not set '{key}'"):
        render.checked_params(params, "kernel_append_params")


def test_other_parameters_pass_in_order():
    assert render.checked_params("nofb  console=ttyS0 ipa-debug=1", "k") == (
        "nofb", "console=ttyS0", "ipa-debug=1")
    assert render.checked_params("", "k") == () and render.checked_params(None, "k") == ()


def test_grub_refuses_a_query_string_the_others_keep_it():
    """GRUB's (http,host) device takes a path: the query would be lost or globbed."""
    with pytest.raises(errors.InvalidParameter, match="query string"):
        render.locate("http://h:8080/k?sig=abc", "grub", HTTP, "driver_info deploy_kernel")
    assert render.locate("http://h:8080/k", "grub", HTTP, "k") == "(http,h:8080)/k"
    for loader in ("ipxe", "pxelinux"):
        assert render.locate("http://h/k?sig=abc", loader, HTTP, "k") == "http://h/k?sig=abc"


def test_https_only_for_ipxe():
    assert render.locate("https://h/k", "ipxe", HTTP, "k") == "https://h/k"
    for loader in ("pxelinux", "grub"):
        with pytest.raises(errors.InvalidParameter):
            render.locate("https://h/k", loader, HTTP, "k")


def test_bad_mac_refused():
    with pytest.raises(errors.InvalidParameter):
        render.hexhyp("52:54:00:12:34:5g")
    assert render.hexhyp("52:54:00:AB:CD:EF") == "52-54-00-ab-cd-ef"


def test_unchecked_values_cannot_be_printed(renderer):
    raw = NodeBoot("u", "n", MACS, "ipxe", "http://h/k; shell", Checked("http://h/r"), ())
    with pytest.raises(errors.InvalidParameter, match="unchecked value"):
        renderer.write(raw)


def test_write_is_atomic_and_idempotent(renderer, tmp_path):
    node = boot("ipxe")
    path = tmp_path / "http" / "ipxe" / "52-54-00-12-34-56.ipxe"
    renderer.write(node)
    before = os.stat(path)
    assert renderer.write(node) == []  # same content: nothing rewritten
    assert os.stat(path).st_ino == before.st_ino
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    changed = renderer.write(boot("ipxe", params=("nofb", "console=ttyS0")))
    assert path in changed
    assert os.stat(path).st_ino != before.st_ino  # replaced by rename, never rewritten in place
    assert "console=ttyS0" in path.read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "f"
    render.write_atomic(path, "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        render.write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_switching_loader_and_remove(renderer, tmp_path):
    renderer.write(boot("pxelinux"))
    renderer.write(boot("grub"))  # boot mode changed: the PXELINUX files must go
    assert not list((tmp_path / "tftp" / "pxelinux.cfg").glob("01-*"))
    assert len(list((tmp_path / "tftp" / "grub").glob("grub.cfg-01-*"))) == 2
    renderer.write(boot("ipxe"))
    removed = renderer.remove(MACS)
    assert len(removed) == 2 and all(p.suffix == ".ipxe" for p in removed)
    assert renderer.remove(MACS) == []  # idempotent
    assert (tmp_path / "tftp" / "boot.ipxe").exists()  # generic files stay


@pytest.mark.parametrize("broken, match", [
    ("{% if %}", "node.ipxe.j2 line"),                 # syntax error
    ("kernel {{ kernal }}", "kernal"),                 # undefined variable (typo)
    ("kernel {{ 'raw' }}", "unchecked value"),         # prints an unvalidated value
])
def test_broken_template_is_caught_at_start(tmp_path, broken, match):
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATE_DIR, templates)
    (templates / "node.ipxe.j2").write_text("#!ipxe\n" + broken + "\n")
    r = Renderer(tmp_path / "tftp", tmp_path / "http", HTTP, template_dir=templates)
    with pytest.raises(errors.ConfigError, match=match) as info:
        r.check_templates()
    assert "node.ipxe.j2" in str(info.value)


def test_install_copies_boot_loaders_once(tmp_path, monkeypatch):
    source = tmp_path / "undionly.kpxe"
    source.write_bytes(b"\x55\xaa" * 50)
    monkeypatch.setattr(render, "LOADER_SOURCES", {"undionly.kpxe": (str(source),),
                                                   "missing.efi": ("/nonexistent",)})
    r = Renderer(tmp_path / "tftp", tmp_path / "http", HTTP)
    r.check_templates()
    r.install()
    target = tmp_path / "tftp" / "undionly.kpxe"
    assert target.read_bytes() == source.read_bytes()
    inode = target.stat().st_ino
    r.install()
    assert target.stat().st_ino == inode
    assert not (tmp_path / "tftp" / "missing.efi").exists()
