"""``rmu recipes``: the published runs ``--recipe`` reproduces, each value with its source."""

from __future__ import annotations

import click


@click.command("recipes")
@click.argument("name", required=False)
def command(name):
    """List the recipes (or one), with every value and the file and line it comes from."""
    from rmu.recipes import RECIPES, describe, get_recipe

    try:
        chosen = [get_recipe(name)] if name else list(RECIPES.values())
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo("\n\n".join(describe(recipe) for recipe in chosen))
