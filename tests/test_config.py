"""Configuration: defaults, the public keys, and errors that name the key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from daemon import cli, config
from daemon.errors import ConfigError

ENV = {"QONTO_SECRET_KEY": "k3y", "OTHER": "other-k3y"}

MINIMAL = """
[qonto]
login = "acme-corp-1234"
secret_key_env = "QONTO_SECRET_KEY"

[database]
path = "state.sqlite3"

[[folders]]
inbox = "/srv/erp/export"
done = "/srv/erp/export/done"
failed = "/srv/erp/export/failed"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] = ENV) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return config.load(path, env=env)


def test_minimal_config_gets_sane_defaults(tmp_path):
    cfg = load(tmp_path, MINIMAL)
    assert cfg.database == tmp_path.resolve() / "state.sqlite3"
    (folder,) = cfg.folders
    assert folder.org.base_url == "https://thirdparty.qonto.com"
    assert folder.org.secret.reveal() == "k3y"
    assert cfg.watch.settle_s == 5.0 and cfg.watch.rescan_interval_s == 60.0
    assert cfg.upload.concurrency == 2
    assert cfg.upload.max_file_bytes == 5_000_000
    assert cfg.upload.max_request_bytes == 15_000_000


def test_the_example_config_loads(tmp_path):
    example = Path(__file__).parent.parent / "config.example.toml"
    cfg = config.load(example, env={"QONTO_SECRET_KEY": "x", "QONTO_SECRET_KEY_OTHER": "y"})
    assert cfg.folders


def test_secret_from_file(tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    cfg = load(tmp_path, MINIMAL.replace('secret_key_env = "QONTO_SECRET_KEY"',
                                         'secret_key_file = "key"'))
    assert cfg.folders[0].org.secret.reveal() == "from-file"


def test_secret_never_prints(tmp_path):
    cfg = load(tmp_path, MINIMAL)
    assert "k3y" not in repr(cfg) and "k3y" not in str(cfg.folders[0].org)


def test_folder_of_another_organization(tmp_path):
    text = MINIMAL + """
[[folders]]
inbox = "/srv/b"
done = "/srv/b/done"
failed = "/srv/b/failed"
login = "other-org-5678"
secret_key_env = "OTHER"
"""
    cfg = load(tmp_path, text)
    assert [f.org.login for f in cfg.folders] == ["acme-corp-1234", "other-org-5678"]
    assert cfg.folders[1].org.secret.reveal() == "other-k3y"
    assert len(cfg.organizations) == 2


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL + "\n[watch]\nsettle_secs = 3\n", "watch.settle_secs"),
    (MINIMAL + '\n[watch]\nsettle_seconds = "soon"\n', "watch.settle_seconds must be a number"),
    (MINIMAL + "\n[upload]\nconcurrency = 0\n", "upload.concurrency"),
    (MINIMAL + "\n[upload]\nconcurrency = 1.5\n", "upload.concurrency must be an integer"),
    (MINIMAL + "\n[bogus]\nx = 1\n", "unknown key bogus"),
    (MINIMAL.replace('login = "acme-corp-1234"\n', ""), "qonto.login"),
    (MINIMAL.replace("[[folders]]", "[[nope]]"), "unknown key nope"),
    (MINIMAL.split("[[folders]]")[0], "missing [[folders]]"),
    (MINIMAL.replace('secret_key_env = "QONTO_SECRET_KEY"', 'secret_key_env = "MISSING"'),
     "MISSING is not set"),
    (MINIMAL.replace('secret_key_env = "QONTO_SECRET_KEY"', 'secret_key = "inline"'),
     "qonto.secret_key"),
    (MINIMAL.replace('done = "/srv/erp/export/done"', 'done = "/srv/erp/export"'),
     "three different folders"),
])
def test_bad_config_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, text)


def test_cli_exits_78_on_config_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QONTO_SECRET_KEY", "k3y")
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL + "\n[upload]\nmax_file_bytes = -1\n")
    assert cli.main(["run", "--config", str(path)]) == 78
    assert "upload.max_file_bytes" in capsys.readouterr().err


def test_cli_exits_78_on_missing_file(tmp_path, capsys):
    assert cli.main(["run", "--config", str(tmp_path / "absent.toml")]) == 78
    assert "does not exist" in capsys.readouterr().err


def config_error(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the real command line on this configuration: exit 78 and the message."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    code = cli.main(["run", "--config", str(path), "--once"])
    assert code == 78
    return capsys.readouterr().err


def folders_toml(inbox: str, done: str, failed: str) -> str:
    return f'\n[[folders]]\ninbox = "{inbox}"\ndone = "{done}"\nfailed = "{failed}"\n'


HEAD = MINIMAL.split("[[folders]]")[0]


def test_done_or_failed_in_another_inbox_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QONTO_SECRET_KEY", "k3y")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "b")  # the same folder by another path
    text = HEAD + folders_toml(f"{tmp_path}/a", f"{tmp_path}/a/done", f"{tmp_path}/alias/x/..")
    text += folders_toml(f"{tmp_path}/b", f"{tmp_path}/b/done", f"{tmp_path}/b/failed")
    err = config_error(tmp_path, text, capsys)
    assert "folders[0].failed" in err and "inbox of folders[1]" in err
    text = HEAD + folders_toml(f"{tmp_path}/a", f"{tmp_path}/b/done", f"{tmp_path}/a/failed")
    text += folders_toml(f"{tmp_path}/b", f"{tmp_path}/b/done2", f"{tmp_path}/b/failed")
    assert "folders[0].done" in config_error(tmp_path, text, capsys)


def test_the_same_inbox_twice_by_two_paths_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QONTO_SECRET_KEY", "k3y")
    (tmp_path / "a").mkdir()
    text = HEAD + folders_toml(f"{tmp_path}/a", f"{tmp_path}/d1", f"{tmp_path}/f1")
    text += folders_toml(f"{tmp_path}/x/../a", f"{tmp_path}/d2", f"{tmp_path}/f2")
    assert "folders[1].inbox" in config_error(tmp_path, text, capsys)


def test_a_journal_inside_an_inbox_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QONTO_SECRET_KEY", "k3y")
    text = MINIMAL.replace('path = "state.sqlite3"', f'path = "{tmp_path}/in/state.sqlite3"')
    text = text.replace("/srv/erp/export", f"{tmp_path}/in")
    err = config_error(tmp_path, text, capsys)
    assert "database.path" in err and "inbox" in err
    assert not (tmp_path / "in").exists()  # nothing was created, nothing moved


@pytest.mark.parametrize("url", [
    "https://acme:s3cr3t-in-url@thirdparty.qonto.com",
    "https://s3cr3t-in-url@thirdparty.qonto.com",
    "https://thirdparty.qonto.com:notaport",
])
def test_a_base_url_with_credentials_is_refused_without_repeating_it(
    tmp_path, capsys, monkeypatch, url
):
    monkeypatch.setenv("QONTO_SECRET_KEY", "k3y")
    text = MINIMAL.replace("[qonto]\n", f'[qonto]\nbase_url = "{url}"\n')
    err = config_error(tmp_path, text, capsys)
    assert "qonto.base_url" in err
    assert "s3cr3t-in-url" not in err and "notaport" not in err


def test_a_secret_with_a_line_break_is_refused_without_repeating_it(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("first-line-s3cr3t\nsecond-line\n", encoding="utf-8")
    text = MINIMAL.replace('secret_key_env = "QONTO_SECRET_KEY"', f'secret_key_file = "{secret}"')
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert "qonto.secret_key_file" in str(caught.value) and "line break" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_secrets_from_systemd_credentials(tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "qonto-secret-key").write_text("cr3d-s3cret\n")
    (creds / "staging").write_text("stg\n")
    text = MINIMAL.replace(
        'secret_key_env = "QONTO_SECRET_KEY"',
        'secret_key_credential = "qonto-secret-key"\nstaging_token_credential = "staging"',
    )
    cfg = load(tmp_path, text, env={"CREDENTIALS_DIRECTORY": str(creds)})
    org = cfg.folders[0].org
    assert org.secret.reveal() == "cr3d-s3cret" and org.staging_token.reveal() == "stg"
    assert "cr3d" not in repr(cfg)
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        load(tmp_path, text, env={})


def test_exactly_one_source_per_secret(tmp_path):
    text = MINIMAL.replace(
        'secret_key_env = "QONTO_SECRET_KEY"',
        'secret_key_env = "QONTO_SECRET_KEY"\nsecret_key_credential = "k"',
    )
    with pytest.raises(ConfigError, match="qonto.secret_key_env and qonto.secret_key_credential"):
        load(tmp_path, text)


def test_a_secret_file_others_can_read_is_warned_about(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("k3y-in-a-file")
    secret.chmod(0o644)
    text = MINIMAL.replace('secret_key_env = "QONTO_SECRET_KEY"', f'secret_key_file = "{secret}"')
    (note,) = load(tmp_path, text).notes
    assert "qonto.secret_key_file" in note and "0600" in note and "k3y" not in note
    secret.chmod(0o600)
    assert load(tmp_path, text).notes == ()


def test_business_rules_are_off_but_required_where_invoices_go_out_by_e_invoice(tmp_path):
    plain = load(tmp_path, MINIMAL)
    assert plain.folders[0].rules == "off" and plain.validation.rules is None
    val = plain.validation
    assert (val.rules_timeout_s, val.rules_memory_mb, val.rules_workers, val.rules_idle_s) == (
        20.0, 1024, 1, 300.0)
    sending = load(tmp_path, MINIMAL + "send_by_einvoice = true\n")
    assert sending.folders[0].rules == "require"
    own = load(tmp_path, MINIMAL + 'send_by_einvoice = true\nrules = "warn"\n')
    assert own.folders[0].rules == "warn"
    text = MINIMAL.replace("[database]", '[validation]\nrules = "warn"\n\n[database]')
    assert load(tmp_path, text).folders[0].rules == "warn"
    assert load(tmp_path, text + "send_by_einvoice = true\n").folders[0].rules == "require"


def test_wrong_business_rule_settings_are_each_named(tmp_path):
    text = MINIMAL.replace(
        "[database]",
        '[validation]\nrules = "strict"\nrules_memory_mb = 100\nrules_workers = 0\n\n'
        "[database]",
    ) + 'rules = "maybe"\n'
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    for part in ("validation.rules", "rules_memory_mb", "rules_workers", "folders[0].rules"):
        assert part in message, part


def test_a_folder_that_sends_by_einvoice_requires_factur_x_unless_it_says_otherwise(tmp_path):
    cfg = load(tmp_path, MINIMAL + 'send_by_einvoice = true\n')
    (folder,) = cfg.folders
    assert folder.send_by_einvoice and folder.facturx == "require"
    cfg = load(tmp_path, MINIMAL + 'send_by_einvoice = true\nfacturx = "warn"\n')
    assert cfg.folders[0].facturx == "warn"
    plain = load(tmp_path, MINIMAL)
    assert not plain.folders[0].send_by_einvoice and plain.folders[0].facturx == "warn"
    assert plain.einvoicing.poll_initial_s == 60.0 and plain.einvoicing.poll_max_s == 21600.0
    assert plain.einvoicing.track_days == 30.0


def test_einvoicing_settings_are_checked(tmp_path):
    cfg = load(tmp_path, "[einvoicing]\npoll_initial_seconds = 30\npoll_max_seconds = 3600\n"
               "track_days = 7\n" + MINIMAL)
    assert (cfg.einvoicing.poll_initial_s, cfg.einvoicing.poll_max_s) == (30.0, 3600.0)
    assert cfg.einvoicing.track_days == 7.0
    with pytest.raises(ConfigError, match="einvoicing.poll_max_seconds"):
        load(tmp_path, "[einvoicing]\npoll_initial_seconds = 60\npoll_max_seconds = 10\n"
             + MINIMAL)
    with pytest.raises(ConfigError, match="einvoicing"):
        load(tmp_path, "[einvoicing]\npoll_every = 5\n" + MINIMAL)


def test_nan_and_inf_are_refused_and_counts_have_a_ceiling(tmp_path):
    text = MINIMAL.replace(
        "[database]",
        "[watch]\nsettle_seconds = nan\n\n[upload]\ntimeout_seconds = inf\nconcurrency = 100000\n"
        "\n[service]\nshutdown_grace_seconds = -inf\n\n[validation]\nparse_workers = 5000\n"
        "\n[database]",
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "watch.settle_seconds must be a finite number, got nan" in message
    assert "upload.timeout_seconds must be a finite number, got inf" in message
    assert "upload.concurrency must be at most 64, got 100000" in message
    assert "validation.parse_workers must be at most 32, got 5000" in message
    assert "service.shutdown_grace_seconds" in message
    code = cli.main(["check-config", "--config", str(tmp_path / "config.toml")])
    assert code == 78


def test_loading_is_linear_in_the_number_of_folders(tmp_path, monkeypatch):
    """A thousand folders: each path resolved once, not once per other folder."""
    import os

    text = '[qonto]\nlogin = "acme"\nsecret_key_env = "QONTO_SECRET_KEY"\n' \
           '[database]\npath = "state.sqlite3"\n'
    for i in range(1000):
        text += f'[[folders]]\ninbox = "/srv/in{i}"\ndone = "/srv/in{i}/done"\n' \
                f'failed = "/srv/failed{i}"\n'
    resolved = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: resolved.append(p) or real(p))
    assert len(load(tmp_path, text).folders) == 1000
    assert len(resolved) <= 6 * 1000  # a few per folder (the journal is compared too)


def test_a_secret_file_that_is_a_fifo_or_not_text_is_one_clear_error(tmp_path):
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    text = MINIMAL.replace('secret_key_env = "QONTO_SECRET_KEY"', f'secret_key_file = "{fifo}"')
    with pytest.raises(ConfigError, match="a named pipe|FIFO|not a regular file"):
        load(tmp_path, text)  # at once: never waits for a writer
    binary = tmp_path / "key.bin"
    binary.write_bytes(b"\xff\xfe\x00secret")
    text = MINIMAL.replace('secret_key_env = "QONTO_SECRET_KEY"', f'secret_key_file = "{binary}"')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(tmp_path, text)
    assert cli.main(["check-config", "--config", str(tmp_path / "config.toml")]) == 78


def test_the_parsers_memory_defaults_keep_the_process_tree_small(tmp_path):
    """Two parsers of 256 MB of address space each (about 150 MB of it the parser's own
    mappings) and the daemon stay under 500 MB together."""
    cfg = load(tmp_path, MINIMAL)
    assert cfg.validation.parse_memory_mb == 256 and cfg.validation.parse_workers == 2
    text = MINIMAL.replace("[database]", "[validation]\nparse_memory_mb = 160\n\n[database]")
    with pytest.raises(ConfigError, match="at least 192"):
        load(tmp_path, text)
