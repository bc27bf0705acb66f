"""The ClientApp: one hospital's round, as a fedsilo client does it (same model, same global
weights in, same seeded minibatches, same SGD steps, same test-set metric)."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedsilo.data import TabularData
from fedsilo.jobs import JobSpec
from fedsilo.learning import build_model, evaluate, train_local

from .job import job_spec, load_site, local_seed, site_of

app = ClientApp()


def global_model(message: Message, spec: JobSpec, data: TabularData) -> nn.Module:
    model = build_model(spec.model, data.num_features, seed=spec.seed)
    model.load_state_dict(message.content.array_records["arrays"].to_torch_state_dict())
    return model


def server_round(message: Message) -> int:
    value = message.content.config_records["config"]["server-round"]
    if not isinstance(value, int):
        raise TypeError(f"server-round should be an integer, got {value!r}")
    return value


@app.train()
def train(message: Message, context: Context) -> Message:
    spec = job_spec(context.run_config)
    site = site_of(context.node_config)
    data = load_site(site, context.run_config)
    model = global_model(message, spec, data)
    result = train_local(
        model,
        data,
        steps=spec.local_steps,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        optimizer=spec.optimizer,
        seed=local_seed(spec.seed, server_round(message), site),
    )
    metrics = MetricRecord({"train-loss": result.mean_loss, "num-examples": result.num_examples})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=message)


@app.evaluate()
def test(message: Message, context: Context) -> Message:
    spec = job_spec(context.run_config)
    data = load_site(site_of(context.node_config), context.run_config)
    result = evaluate(global_model(message, spec, data), data.x_test, data.y_test)
    metrics = MetricRecord(
        {
            "accuracy": result.accuracy,
            "loss": result.loss,
            "num-examples": result.num_examples,
            "partition-id": int(context.node_config["partition-id"]),
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)
