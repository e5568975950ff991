"""``childvault serve``: run the institution server over a home (docs/server.md)."""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import Ctx, _, pass_ctx

#: ``--allowed-host`` of ``serve`` and ``witness`` (both check the Host header).
_allowed_host = click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME[:PORT]",
    help="A name clients reach the server by, besides the listen address (repeatable); "
    "requests with another Host header are refused.",
)


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:8443",
    show_default=True,
    help="HOST:PORT to listen on; any address but loopback needs TLS or --behind-proxy.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="TLS cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="TLS key.")
@click.option("--behind-proxy", is_flag=True, help="A reverse proxy on this host terminates TLS.")
@_allowed_host
@click.option(
    "--witness-url",
    "witness_urls",
    multiple=True,
    help="URL of a checkpoint witness (`childvault witness`) that must cosign every checkpoint.",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    help="Verifier key of the witness at the --witness-url in the same position "
    "(none given: the keys recorded with `childvault witness-keys add`).",
)
@click.option(
    "--witness-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This replica's own witness file (default: the home's configured witness).",
)
@click.option(
    "--user-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=12000.0,
    show_default=True,
    help="Requests each user may make per minute (beyond --user-burst): 429 over it.",
)
@click.option(
    "--user-burst",
    type=click.IntRange(min=1),
    default=20000,
    show_default=True,
    help="Requests each user may make at once before --user-rate applies.",
)
@click.option(
    "--txn-max",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a transaction may stay open while another client waits; then it is rolled back.",
)
@pass_ctx
def serve(
    c: Ctx,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    behind_proxy: bool,
    witness_urls: tuple[str, ...],
    witness_keys: tuple[str, ...],
    witness_file: Path | None = None,
    user_rate: float = 12000.0,
    user_burst: int = 20000,
    txn_max: float = 60.0,
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    """Serve the vault in --home to workstations (`childvault --server URL ...`).

    Run it as a service account that alone can read the home. It unlocks the
    database with the key slot of --as (passphrase from CHILDVAULT_PASSPHRASE),
    keeps only the database key and the vault's anchor, and never sees a
    plaintext value: clients encrypt and decrypt. Stops on SIGTERM.
    """
    try:
        from childvault.server._serve import serve as run_server
    except ImportError as exc:
        raise click.UsageError(
            _("the server needs the server extra: pip install 'childvault[server]'")
        ) from exc

    if witness_keys and len(witness_urls) != len(witness_keys):
        raise click.UsageError(_("give one --witness-key for each --witness-url"))
    # No key given: each witness cosigns under one of the keys recorded in the vault.
    pairs: list[tuple[str, str | None]] = (
        list(zip(witness_urls, witness_keys, strict=True))
        if witness_keys
        else [(url, None) for url in witness_urls]
    )
    home = c.require_home()
    user = c.require_user()
    click.echo(
        _("childvault server for {home} on {listen}").format(home=home, listen=listen), err=True
    )
    run_server(
        home,
        user,
        c.passphrase(user),
        listen=listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        behind_proxy=behind_proxy,
        witnesses=pairs,
        witness=witness_file,
        user_rate=user_rate,
        user_burst=user_burst,
        txn_max=txn_max,
        allowed_hosts=allowed_hosts,
    )


@click.command()
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The witness's own directory: its key and the checkpoints it cosigned.",
)
@click.option(
    "--log-key",
    "log_keys",
    multiple=True,
    required=True,
    help="Verifier key of a checkpoint signer whose checkpoints it cosigns (repeatable).",
)
@click.option("--name", help="Key name of a new witness (default: childvault-witness-<id>).")
@click.option(
    "--listen",
    default="127.0.0.1:8444",
    show_default=True,
    help="HOST:PORT to listen on; any address but loopback needs TLS or --behind-proxy.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="TLS cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="TLS key.")
@click.option("--behind-proxy", is_flag=True, help="A reverse proxy on this host terminates TLS.")
@_allowed_host
@pass_ctx
def witness(
    c: Ctx,
    directory: Path,
    log_keys: tuple[str, ...],
    name: str | None,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    behind_proxy: bool,
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    """Run a checkpoint witness for a log server (`serve --witness-url`).

    Run it on other media or another machine. It cosigns a checkpoint only if
    a --log-key signed it and it extends, by a valid consistency proof, the
    last checkpoint it cosigned for that log; so a log rewritten or forked
    after a cosignature cannot get another. It needs no vault and no
    passphrase; its key is made in --dir on first start. Stops on SIGTERM.
    """
    try:
        from childvault.server._serve import serve_witness
    except ImportError as exc:
        raise click.UsageError(
            _("the server needs the server extra: pip install 'childvault[server]'")
        ) from exc

    def announce(vkey: str) -> None:
        click.echo(
            _("childvault witness {vkey} on {listen}").format(vkey=vkey, listen=listen), err=True
        )

    serve_witness(
        directory,
        list(log_keys),
        name=name,
        listen=listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        behind_proxy=behind_proxy,
        announce=announce,
        allowed_hosts=allowed_hosts,
    )
