"""protection: paillier — sites upload packed Paillier ciphertexts of their weighted updates.

The keymanager makes the job's key pair at submission; the public key rides on every task.
Aggregation runs twice: first over ciphertext indices (the aggregators multiply ciphertexts,
which adds the plaintexts), then the keymanager checks and decrypts the product, and a second
pass over the model's coordinates turns the decrypted sum into the new model."""

from __future__ import annotations

from typing import Any

from fedsilo.jobs import JobSpec
from fedsilo.paillier import ciphertext_bytes, public_key_from_bytes
from fedsilo.rpc.errors import RpcRejection, failed_precondition, invalid_argument
from fedsilo.scheduler.interfaces import Job, RoundRuntime, TaskInfo
from fedsilo.scheduler.jobrows import job_manifest, job_spec
from fedsilo.scheduler.protocols.base import RoundProtocol
from fedsilo.v1 import aggregator_pb2, modelstore_pb2, scheduler_pb2

DECRYPTED_SUM = "decrypted-sum"


def encrypted_update_bytes(job: Job) -> int:
    """Size of a well-formed encrypted update: ciphertexts (canary included) x their width."""
    spec = job_spec(job)
    public_key = public_key_from_bytes(bytes.fromhex(job["public_key"]))
    count = spec.paillier.packing().num_ciphertexts(job_manifest(job).num_parameters)
    return int(count * ciphertext_bytes(public_key))


class PaillierProtocol(RoundProtocol):
    name = "paillier"
    update_dtype = "bytes"

    def prepare_job(self, job_id: str, spec: JobSpec) -> dict[str, Any]:
        if self.control.keys is None:
            raise failed_precondition("this scheduler has no keymanager for 'paillier'")
        return {"public_key": self.control.keys.create_job_key(job_id, spec).hex()}

    def open_round(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> None:
        # Sites weight their update by n_k / (the selected sites' examples) before encrypting.
        runtime.total_examples = self.control.total_examples(spec, sorted(runtime.selected))
        self.control.store.update_round(
            job["job_id"], job["round"], total_examples=runtime.total_examples
        )
        super().open_round(job, spec, runtime)

    def decorate(
        self, task: scheduler_pb2.Task, job: Job, runtime: RoundRuntime, client_id: str
    ) -> None:
        spec = job_spec(job)
        task.protection = spec.protection
        task.public_key = bytes.fromhex(job["public_key"])
        task.packing_json = spec.paillier.model_dump_json()
        task.total_examples = runtime.total_examples

    def precheck(
        self,
        request: scheduler_pb2.SubmitUpdateRequest,
        job: Job | None,
        info: modelstore_pb2.BlobInfo | None,
    ) -> str | None:
        """Does the upload's canary decrypt under the job's key? Asked of the keymanager, for
        a right-sized upload only."""
        keys = self.control.keys
        if (
            job is None
            or not job["public_key"]
            or keys is None
            or info is None
            or request.round < 1
            or info.ref.size != encrypted_update_bytes(job)
        ):
            return None
        return keys.upload_problem(request.job_id, request.update.digest)

    def check_update(
        self,
        job: Job,
        task: TaskInfo,
        request: scheduler_pb2.SubmitUpdateRequest,
        info: modelstore_pb2.BlobInfo,
        problem: str | None,
    ) -> None:
        expected_bytes = encrypted_update_bytes(job)
        if info.ref.size != expected_bytes:
            raise invalid_argument(
                f"encrypted update has {info.ref.size} bytes; this job's key and model "
                f"need exactly {expected_bytes}"
            )
        if problem is not None:
            raise invalid_argument(f"encrypted update refused: {problem}")
        if request.num_examples <= 0:
            raise invalid_argument(f"num_examples must be positive, got {request.num_examples}")

    def pass_layout(
        self, job: Job, runtime: RoundRuntime, num_parameters: int, shard_parameters: int
    ) -> tuple[int, int, str]:
        if runtime.sum_digest:  # the second pass: the decrypted sum's coordinates
            return num_parameters, shard_parameters, "plaintext"
        packing = job_spec(job).paillier.packing()
        row = self.control.store.round(job["job_id"], job["round"])
        runtime.total_examples = float(row["total_examples"] if row else 0) or 1.0
        width = max(1, shard_parameters // packing.slots_per_plaintext)
        return packing.num_ciphertexts(num_parameters), width, "ciphertexts"

    def shard(
        self, message: aggregator_pb2.Shard, job: Job, spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        message.public_key = bytes.fromhex(job["public_key"])
        if runtime.pass_kind == "ciphertexts":
            message.protection = "paillier"
        else:
            del message.inputs[:]
            message.inputs.append(
                aggregator_pb2.ShardInput(
                    client_id=DECRYPTED_SUM, digest=runtime.sum_digest, num_examples=1
                )
            )

    def aggregation_done(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> bool:
        """After the ciphertext pass: the products of all shards are the encrypted sum; the
        keymanager checks and decrypts it, and the plaintext pass starts from it."""
        if runtime.pass_kind != "ciphertexts":
            return True
        keys = self.control.keys
        assert keys is not None
        aggregate = self.control.artifacts.compose(
            [s.weights for s in runtime.shards], dtype="bytes"
        )
        updates = self.control.store.updates(job["job_id"], job["round"], job["attempt"])
        try:
            runtime.sum_digest = keys.decrypt_aggregate(
                job["job_id"],
                job["round"],
                aggregate.digest,
                [(u.client_id, u.digest) for u in updates],
                job_manifest(job).num_parameters,
            )
        except RpcRejection as rejection:
            runtime.shards = []
            self.control.retry_round(job, spec, runtime, f"decryption refused: {rejection.message}")
            return False
        # Sites weighted by n_k / (examples of all selected); dropouts change the total.
        runtime.input_scale = runtime.total_examples / sum(u.num_examples for u in updates)
        self.control.plan_aggregation(job, runtime)
        return False
