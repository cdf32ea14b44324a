"""``cspine ct ...``: each command lives in its own module and is registered here."""

from __future__ import annotations

import typer

from cspine.cli import ct_data, ct_evaluate, ct_predict, ct_train

app = typer.Typer(no_args_is_help=True)
app.command("prepare")(ct_data.prepare)
app.command("eda")(ct_data.eda)
app.command("train")(ct_train.train)
app.command("predict")(ct_predict.predict)
app.command("evaluate")(ct_evaluate.evaluate)
