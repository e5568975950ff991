"""``childvault serve``: run the institution server over a home (docs/server.md)."""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import Ctx, _, pass_ctx


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
@click.option(
    "--witness-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This replica's own witness file (default: the home's configured witness).",
)
@pass_ctx
def serve(
    c: Ctx,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    behind_proxy: bool,
    witness_file: Path | None = None,
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
        witness=witness_file,
    )
