"""The ``llmrec`` command line: the group, its options, and the module of each command.

Each command loads settings once (the group does, into the context) and hands them to one call of a lower
layer. Commands are imported only when they run (``cli.lazy``), so ``llmrec --help`` and the light commands
never import torch, faiss or transformers; the summaries below are what ``llmrec --help`` lists, the first
paragraph of each command's help (tests/unit/test_cli.py keeps them equal).
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.lazy import LazyCommand, LazyGroup
from llmrec.logs import configure_logging
from llmrec.settings import CONFIG_VARIABLE, SettingsError, load_settings

# What the group leaves in ``ctx.meta`` for ``llmrec config``: the config file it read (or None), the
# settings the group's own options replaced ({"log_level": "option --log-level"}), and the SettingsError
# when the settings did not load (only ``llmrec config`` runs then, to report it).
META_CONFIG_FILE = "llmrec.config_file"
META_OVERRIDES = "llmrec.overrides"
META_LOAD_ERROR = "llmrec.load_error"

COMMANDS = {
    "up": LazyCommand(
        "cli.stack_commands:up",
        "Start Kafka, PostgreSQL, Triton, the worker and the API (whatever is not yet running).",
    ),
    "down": LazyCommand("cli.stack_commands:down", "Stop everything `llmrec up` started."),
    "status": LazyCommand("cli.stack_commands:status", "Show which components run and their endpoints."),
    "migrate": LazyCommand("cli.stack_commands:migrate", "Create or upgrade the database schema."),
    "worker": LazyCommand(
        "cli.service_commands:worker", "Run the Faust worker that applies events to user profiles."
    ),
    "serve": LazyCommand("cli.service_commands:serve", "Run the gRPC recommendation API."),
    "publish": LazyCommand(
        "cli.data_commands:publish", "Publish the events in a CSV or JSONL file to their Kafka topics."
    ),
    "replay": LazyCommand(
        "cli.data_commands:replay",
        "Turn the real MyAnimeList data into events and publish them in event-time order.",
    ),
    "import-items": LazyCommand(
        "cli.data_commands:import_items",
        "Publish a catalogue (JSONL or CSV items, or --from mal|movielens) as item upserts.",
    ),
    "build-index": LazyCommand(
        "cli.data_commands:build_index",
        "Embed the item catalogue through Triton and write the FAISS index to the artifacts folder.",
    ),
    "schema": LazyCommand(
        "cli.data_commands:schema", "Write the events' JSON Schemas to proto/events/v1/ for other languages."
    ),
    "recommend": LazyCommand(
        "cli.api_commands:recommend", "Ask the running API for a user's recommendations."
    ),
    "similar": LazyCommand(
        "cli.api_commands:similar",
        "Ask the running API for items similar to one item (its catalogue id, e.g. mal:5114).",
    ),
    "profile": LazyCommand("cli.api_commands:profile", "Ask the running API what it knows about a user."),
    "loadtest": LazyCommand(
        "cli.api_commands:loadtest",
        "Drive Recommend with concurrent clients; print latency percentiles, req/s and errors by code.",
    ),
    "eval": LazyCommand(
        "cli.model_commands:evaluate",
        "Train and evaluate the baselines on real data; merges into reports/eval.json (same dataset, "
        "protocol, model and seed replaced, others kept) and rebuilds reports/eval.md.",
    ),
    "tune": LazyCommand(
        "cli.model_commands:tune",
        "Tune every baseline with the same budget on protocol (a)'s validation part (seed 42, NDCG@10); "
        "merges into reports/tuned_params.json, which `llmrec eval` reads.",
    ),
    "train-ranker": LazyCommand(
        "cli.model_commands:train_ranker",
        "Train the llmrec ranker and save artifacts/ranker/<version>/, pointing CURRENT at it.",
    ),
    "eval-report": LazyCommand(
        "cli.model_commands:eval_report",
        "The llmrec model's report (Tables 3, 4, 9, 10, static vs dynamic profiles, t-SNE, inference "
        "time, case studies): reports/llmrec_model.{md,json} + PNGs. Needs the full data in "
        "LLMREC_DATA_DIR.",
    ),
    "train-sentiment": LazyCommand(
        "cli.encoder_commands:train_sentiment",
        "Train the review-sentiment head on MAL reviews; compare with the anchor scorer and VADER on "
        "held-out titles. Writes the head to --out and reports/sentiment.{json,md}.",
    ),
    "train-encoder": LazyCommand(
        "cli.encoder_commands:train_encoder",
        "MLM domain adaptation, SimCSE contrastive fine-tuning and the sentiment head; writes a run folder.",
    ),
    "export-encoder": LazyCommand(
        "cli.encoder_commands:export_encoder",
        "Write RUN_DIR (a train-encoder run, or a train-sentiment folder for the packaged MiniLM) as a "
        "Triton model version; Triton serves the highest version.",
    ),
    "encoder-report": LazyCommand(
        "cli.encoder_report_command:encoder_report",
        "reports/encoder.{md,json} + PNGs from training runs (the first is the headline) and the serving "
        "benchmark.",
    ),
    "config": LazyCommand(
        "cli.config_commands:config",
        "Show the settings in effect (secrets masked) or check a config file.",
    ),
    "demo": LazyCommand(
        "cli.demo_command:demo",
        "Bring the stack up, stream real events through it, show recommendations, shut it down.",
    ),
}


class InvalidSettings(click.ClickException):
    """Settings that did not load: each problem on its own line, exit status 2 (as for a usage error)."""

    exit_code = 2

    def __init__(self, error: SettingsError) -> None:
        super().__init__(str(error))


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar=CONFIG_VARIABLE,
    show_envvar=True,
    help="Settings from this TOML file (see llmrec.example.toml); LLMREC_* variables win over it.",
)
@click.option("--log-level", default=None, help="Override LLMREC_LOG_LEVEL (DEBUG, INFO, WARNING).")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, log_level: str | None) -> None:
    """llmrec: a real-time recommender over Kafka, PostgreSQL, Triton, FAISS and gRPC."""
    ctx.meta[META_CONFIG_FILE] = config_file
    ctx.meta[META_OVERRIDES] = {}
    try:
        settings = load_settings(config_file)
    except SettingsError as exc:
        if ctx.invoked_subcommand == "config":  # `llmrec config validate` reports it
            ctx.meta[META_LOAD_ERROR] = exc
            return
        raise InvalidSettings(exc) from None
    if log_level:
        settings = settings.model_copy(update={"log_level": log_level})
        ctx.meta[META_OVERRIDES]["log_level"] = "option --log-level"
    configure_logging(settings.log_level, settings.log_json)
    ctx.obj = settings


def main() -> None:
    cli(auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
