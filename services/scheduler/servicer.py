"""Scheduler gRPC servicers: the client-facing API and the aggregation queue."""

from __future__ import annotations

import logging

import grpc

from fedsilo.audit import AuditLog
from fedsilo.rpc.auth import Authorizer
from fedsilo.rpc.errors import translate_errors
from fedsilo.scheduler.engine import Scheduler
from fedsilo.v1 import aggregator_pb2, aggregator_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger("fedsilo.scheduler")


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(
        self, scheduler: Scheduler, auth: Authorizer, audit: AuditLog | None = None
    ) -> None:
        self._scheduler = scheduler
        self._auth = auth
        self.audit = audit

    @translate_errors(log)
    def WaitForTask(
        self, request: scheduler_pb2.WaitForTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.Task:
        self._auth.require_client(context, request.client_id)
        return self._scheduler.wait_for_task(request.client_id, request.wait_s)

    @translate_errors(log)
    def SubmitUpdate(
        self, request: scheduler_pb2.SubmitUpdateRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.SubmitUpdateResponse:
        self._auth.require_client(context, request.client_id)
        self._scheduler.submit_update(request)
        return scheduler_pb2.SubmitUpdateResponse(accepted=True)

    @translate_errors(log)
    def ReportEvaluation(
        self, request: scheduler_pb2.ReportEvaluationRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ReportEvaluationResponse:
        self._auth.require_client(context, request.client_id)
        self._scheduler.report_evaluation(request)
        return scheduler_pb2.ReportEvaluationResponse()

    @translate_errors(log)
    def DeclineTask(
        self, request: scheduler_pb2.DeclineTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.DeclineTaskResponse:
        self._auth.require_client(context, request.client_id)
        self._scheduler.decline_task(request)
        if self.audit is not None:
            self.audit.append(
                "task_declined",
                actor=request.client_id,
                task_id=request.task_id,
                reason=request.reason,
            )
        return scheduler_pb2.DeclineTaskResponse()

    @translate_errors(log)
    def SecAggSubmit(
        self, request: scheduler_pb2.SecAggSubmitRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.SecAggSubmitResponse:
        self._auth.require_client(context, request.client_id)
        self._scheduler.secagg_submit(request)
        return scheduler_pb2.SecAggSubmitResponse()


class AggregationQueueServicer(aggregator_pb2_grpc.AggregationQueueServicer):
    def __init__(
        self, scheduler: Scheduler, auth: Authorizer, audit: AuditLog | None = None
    ) -> None:
        self._scheduler = scheduler
        self._auth = auth
        self.audit = audit

    @translate_errors(log)
    def LeaseShard(
        self, request: aggregator_pb2.LeaseShardRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.LeaseShardResponse:
        self._auth.require_service(context, "aggregator")
        shard = self._scheduler.lease_shard(request.worker_id, request.wait_s)
        if shard is None:
            return aggregator_pb2.LeaseShardResponse(has_shard=False)
        return aggregator_pb2.LeaseShardResponse(has_shard=True, shard=shard)

    @translate_errors(log)
    def RenewLease(
        self, request: aggregator_pb2.RenewLeaseRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.RenewLeaseResponse:
        self._auth.require_service(context, "aggregator")
        expires = self._scheduler.renew_lease(request.shard_id, request.lease_id)
        return aggregator_pb2.RenewLeaseResponse(lease_expires_unix=expires)

    @translate_errors(log)
    def CompleteShard(
        self, request: aggregator_pb2.CompleteShardRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.CompleteShardResponse:
        self._auth.require_service(context, "aggregator")
        return aggregator_pb2.CompleteShardResponse(
            accepted=self._scheduler.complete_shard(request)
        )
