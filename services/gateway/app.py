"""The gateway process: wires settings into the parts, serves health and metrics, runs until stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from hubclient.models import ApiRequest, ApiResponse, Provider, Status
from services.gateway.admission import PACE_REFUSALS
from services.gateway.clock import SystemClock
from services.gateway.consumer import RequestConsumer
from services.gateway.cpu_wait import RunQueueWait
from services.gateway.dispatcher import HttpDispatcher
from services.gateway.errors import NotPermitted
from services.gateway.events import EventForwarder
from services.gateway.gateway import Gateway
from services.gateway.idempotency import IdempotencyStore
from services.gateway.intake import read_record
from services.gateway.metrics import ANSWERED_LATE, REQUESTS, caller_label, child, tr_id_label
from services.gateway.permissions import CallerTopics, check_arrival, load_permissions
from services.gateway.pool import pools
from services.gateway.publisher import AnswerTooLarge, Publisher
from services.gateway.quota import GroupQuota
from services.gateway.slots import RedisSlots
from services.gateway.token_store import RedisTokenStore
from services.kafka_client import client_kwargs
from services.logs import Sampled, log_event
from services.redis_client import redis_client
from services.settings import GatewaySettings

logger = logging.getLogger(__name__)

PUBLISH_RETRY_S = 0.5
#: Objects allocated (net) before the collector's youngest pass. At Python's 700 a burst of requests set it
#: off about 60 times a second, 6 % of the gateway's CPU, for cycles that are rare here (reference
#: counting frees a request's objects); at 10,000 a 20,000-request burst saw 4 passes.
GC_YOUNG_THRESHOLD = 10_000


class MetricsPortUnavailable(Exception):
    """The address of ``/healthz``, ``/readyz`` and ``/metrics`` is taken (or not this host's): the gateway
    cannot start."""


class GatewayApp:
    """Everything one gateway instance owns; ``async with`` starts and stops it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        providers = {Provider.KIS: settings.kis, Provider.KIWOOM: settings.kiwoom}
        # Bounded pools make callers wait for a connection (hundreds of queued requests look up their
        # idempotency records at once; redis-py's default pool refuses beyond 100). Pacing has a small pool
        # of its own, so a slot is never queued behind a burst of intake lookups.
        self.redis: Redis = redis_client(settings.redis, connections=64, wait_s=5)
        self.pacing_redis: Redis = redis_client(settings.redis, connections=4, wait_s=1)
        self.dispatcher = HttpDispatcher(dict(providers))
        clock = SystemClock()
        provider_pools = pools(providers, clock)  # once: a credentials file is read and checked once
        appkeys = {  # by limit domain: each pool member's token is its appkey's
            m.domain: m.settings.appkey.get_secret_value()
            for pool in provider_pools.values()
            for m in pool.members
            if m.settings.appkey is not None
        }
        prefix = settings.redis.key_prefix
        permissions_file = settings.permissions_file
        self.quota = GroupQuota()  # learnt with each assignment, kept to while Redis is lost
        self.gateway = Gateway(
            instance_id=settings.instance_id,
            quota=self.quota,
            providers=providers,
            dispatcher=self.dispatcher,
            slots=RedisSlots(self.pacing_redis, key_prefix=settings.redis.key_prefix),
            token_store=RedisTokenStore(self.redis, key_prefix=prefix, appkeys=appkeys, clock=clock),
            approval_store=RedisTokenStore(
                self.redis, key_prefix=prefix, appkeys=appkeys, clock=clock, kind="approval"
            ),
            idempotency=IdempotencyStore(self.redis, key_prefix=settings.redis.key_prefix),
            clock=clock,
            max_backlog=settings.max_backlog,
            max_param_keys=settings.max_param_keys,
            max_param_value_chars=settings.max_param_value_chars,
            shared_cache_entries=settings.shared_cache_entries,
            shared_cache_bytes=settings.shared_cache_bytes,
            permissions=load_permissions(Path(permissions_file)) if permissions_file else None,
            run_queue=RunQueueWait(clock),
            provider_pools=provider_pools,
        )
        self.publisher = Publisher(
            settings.kafka.bootstrap_servers,
            dlq_topic=settings.kafka.dlq_topic,
            client_id=f"apihub-gateway-{settings.instance_id}",
            client_options=client_kwargs(settings.kafka),
        )
        self.events = EventForwarder(
            self.publisher.event, topic=settings.kafka.events_topic, instance_id=settings.instance_id
        )
        self.consumer = RequestConsumer(
            settings.kafka,
            self.handle_record,
            instance_id=settings.instance_id,
            max_inflight=settings.max_inflight,
            readahead=settings.readahead_per_partition,
            abandonable=self._abandonable,
            quota=self.quota,
        )
        self._reply_topics = settings.kafka.reply_topics
        self._caller_topics = CallerTopics.of(settings.kafka.caller_topics)
        self._run_task: asyncio.Task[None] | None = None
        self._http: web.AppRunner | None = None
        self._stopping = False
        # Every answer waiting for Kafka retries twice a second: while Kafka is away, one line a second.
        self._publish_retry = Sampled(logger, "publish.retry")

    async def start(self) -> None:
        """Start every part, then begin consuming; a part that cannot start closes those built before."""
        try:
            await self.redis.ping()
            await self.dispatcher.start()
            await self.publisher.start()
            await self.events.start()
            await self.consumer.start()
        except BaseException:
            await self.stop()
            raise
        self._run_task = asyncio.create_task(self.consumer.run(), name="gateway-consumer")
        log_event(
            logger,
            "gateway.started",
            instance_id=self.settings.instance_id,
            request_topic=self.settings.kafka.request_topic,
            group_id=self.settings.kafka.group_id,
        )

    async def stop(self) -> None:
        """Drain and commit, then close every part."""
        self._stopping = True
        await self.consumer.stop()
        if self._run_task is not None:
            await asyncio.gather(self._run_task, return_exceptions=True)
        await self.gateway.stop()
        await self.events.stop()
        await self.publisher.stop()
        await self.dispatcher.stop()
        await self.redis.aclose()
        await self.pacing_redis.aclose()
        await self.stop_http()
        if self._run_task is not None:  # it had started
            log_event(logger, "gateway.stopped", instance_id=self.settings.instance_id)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Serve one record: answer it exactly once, or dead-letter it (and answer where possible)."""
        intake = read_record(
            record,
            self._reply_topics,
            max_request_bytes=self.settings.max_request_bytes,
            caller_topics=self._caller_topics.by_topic,
        )
        if intake.request is None:
            await self._dead_letter(record, intake.reason or "invalid")
            if intake.reply is not None and await self.publisher.can_reply_to(
                intake.reply.topic, intake.reply.partition
            ):
                response = ApiResponse(
                    request_id=intake.reply.request_id,
                    status=Status.INVALID,
                    reason="invalid_request",
                    message=intake.reason,
                    gateway=self.settings.instance_id,
                )
                reply = intake.reply
                await self._respond(
                    response, reply.topic, reply.partition, None, "-", "-", "-", intake.correlation_id
                )
            return
        request = intake.request
        if not await self.publisher.can_reply_to(request.reply_topic, request.reply_partition):
            missing = f"{request.reply_topic} has no partition {request.reply_partition}"
            await self._dead_letter(record, f"reply_partition_unknown: {missing}")
            return
        try:
            check_arrival(self._caller_topics, record.topic, request)  # a name bound to another topic
            response = await self.gateway.handle(request, (record.topic, record.partition, record.offset))
        except NotPermitted as exc:
            response = self.gateway.responder.error(request, exc)
        except Exception as exc:  # a bug must still end in exactly one answer
            logger.exception("gateway.internal_error", extra={"fields": {"request_id": request.request_id}})
            response = self.gateway.answer(
                request, Status.REJECTED, reason="internal_error", message=type(exc).__name__
            )
        await self._respond(
            response,
            request.reply_topic,
            request.reply_partition,
            request,
            request.provider.value,
            request.tr_id,
            request.caller,
            intake.correlation_id,
        )

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        source = f"{record.topic}:{record.partition}:{record.offset}"
        headers = list(record.headers or ())
        await self._publish_with_retry(
            lambda: self.publisher.dead_letter(
                record.key, record.value, headers, reason=reason, source=source
            )
        )

    def _abandonable(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """A record may be left to the next owner while its request still waits in its queue."""
        return self.gateway.is_abandonable((record.topic, record.partition, record.offset))

    async def _respond(
        self,
        response: ApiResponse,
        topic: str,
        partition: int,
        request: ApiRequest | None,
        provider: str,
        tr_id: str,
        caller: str,
        correlation_id: bytes | None = None,
    ) -> None:
        started = time.monotonic()

        def send(answer: ApiResponse) -> Awaitable[None]:
            return self.publisher.respond(
                answer,
                reply_topic=topic,
                reply_partition=partition,
                request=request,
                correlation_id=correlation_id,
            )

        try:
            await self._publish_with_retry(lambda: send(response))
        except AnswerTooLarge as exc:
            log_event(
                logger,
                "request.answer_too_large",
                logging.WARNING,
                request_id=response.request_id,
                status=response.status.value,
                bytes=exc.size,
                topic=exc.topic,
            )
            response = self.gateway.responder.too_large(response, request, str(exc))
            await self._publish_with_retry(lambda: send(response))
        self.gateway.observe_reply(time.monotonic() - started)
        child(
            REQUESTS, provider, tr_id_label(provider, tr_id), caller_label(caller), response.status.value
        ).inc()
        if request is not None and time.time() * 1000 > request.deadline_ms:
            child(ANSWERED_LATE, provider).inc()
        # An ok answer is the bulk of the traffic and counted in REQUESTS: its line is debug (a JSON line
        # per answer was a few % of the gateway's CPU). So is a refusal by pace, the bulk under overload,
        # which ``ratelimit.rejected`` logged already; every other status stays at info.
        quiet = response.status is Status.OK or (
            response.status is Status.REJECTED and response.reason in PACE_REFUSALS
        )
        level = logging.DEBUG if quiet else logging.INFO
        if not logger.isEnabledFor(level):
            return
        log_event(
            logger,
            "request.answered",
            level,
            request_id=response.request_id,
            provider=provider,
            tr_id=tr_id,
            caller=caller,
            status=response.status.value,
            reason=response.reason,
            total_ms=response.timing.total_ms,
            attempts=response.attempts,
        )

    async def _publish_with_retry(self, send: Callable[[], Awaitable[None]]) -> None:
        """Keep trying while running: an unpublished answer must not be committed, nor given up."""
        while True:
            try:
                await send()
                return
            except KafkaError as exc:
                if self._stopping:
                    raise
                self._publish_retry.log(error=str(exc))
                await asyncio.sleep(PUBLISH_RETRY_S)

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """Joined the group with a running consumer and Redis reachable; tokens are reported only."""
        try:
            redis_ok = bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (RedisError, OSError, TimeoutError):
            redis_ok = False
        kafka_ok = self.consumer.joined and self._run_task is not None and not self._run_task.done()
        detail: dict[str, object] = {
            "kafka_consuming": kafka_ok,
            "assigned_partitions": len(self.consumer.assignment),
            "redis": redis_ok,
            "tokens_valid": {d: self.gateway.tokens.cached_valid(d) for d in self.gateway.members},
            "checked_at_ms": int(time.time() * 1000),
        }
        return kafka_ok and redis_ok, detail

    async def start_http(self, host: str, port: int) -> None:
        """Serve ``/healthz``, ``/readyz`` and ``/metrics``; ``MetricsPortUnavailable`` when the address
        cannot be bound."""
        app = web.Application()

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "instance_id": self.settings.instance_id})

        async def readyz(_: web.Request) -> web.Response:
            ready, detail = await self.readiness()
            return web.json_response({"ready": ready, **detail}, status=200 if ready else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        routes = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}
        app.add_routes([web.get(path, handler) for path, handler in routes.items()])
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        try:
            await web.TCPSite(self._http, host, port).start()
        except OSError as exc:
            await self.stop_http()
            raise MetricsPortUnavailable(
                f"the gateway cannot listen on {host}:{port} for /healthz, /readyz and /metrics "
                f"({exc.strerror or exc}); set APIHUB_METRICS_PORT to a free port "
                "(APIHUB_GATEWAY_METRICS_PORT for make up)"
            ) from exc

    async def stop_http(self) -> None:
        """Stop the HTTP server."""
        if self._http is not None:
            await self._http.cleanup()
            self._http = None


async def run_gateway(settings: GatewaySettings, stop: asyncio.Event) -> None:
    """Run one gateway instance until ``stop`` is set."""
    app = GatewayApp(settings)
    try:
        await app.start_http(settings.metrics_host, settings.metrics_port)
    except MetricsPortUnavailable:
        await app.stop()  # nothing was started: this closes the clients the app made
        raise
    try:
        async with app:
            # Everything built so far lives as long as the process: keep it out of the collector's
            # full passes, which would otherwise pause the pacing loop for longer as the heap grows.
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            await stop.wait()
    finally:
        await app.stop_http()
