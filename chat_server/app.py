"""Composition root: the one place where objects are built and wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web
from aiohttp_apigami import setup_aiohttp_apispec, validation_middleware
from redis.asyncio import Redis

from .auth import TokenIssuer, TokenVerifier
from .config import Settings
from .metrics import Metrics
from .migrate import apply_migrations
from .realtime.broadcaster import Broadcaster
from .realtime.connections import ConnectionRegistry
from .realtime.drain import Drain
from .realtime.fanout import FastFanout, orjson_module
from .realtime.lean_transport import LeanWebSockets
from .realtime.manager import LocalDeliveryHook, LocalManager, RedisManager
from .realtime.moderation_relay import LiveModeration
from .realtime.packets import ChatPacket
from .realtime.room_cache_relay import RoomCacheRelay
from .realtime.room_stats import Gate, MemoryGate, RedisGate, RoomStatsCoalescer
from .realtime.sessions import ChatSessions, LivePolicy
from .realtime.socketio_handlers import ENVIRON_KEYS, OVERLAPPING_EVENTS, SocketIOHandlers
from .realtime.ws_handler import setup_ws
from .rest.dev_auth import DevTokenApi
from .rest.forwarded import TrustedProxies, forwarded_middleware
from .rest.health import HealthApi
from .rest.middleware import VERIFIER_KEY, auth_middleware, error_middleware, validation_error_callback
from .rest.moderation import ModerationApi
from .rest.pages import PagesApi
from .rest.ratelimit import RestLimits, rest_rate_limit_middleware
from .rest.rooms import RoomsApi
from .services.messages import MessageLimits, MessageService
from .services.moderation import BanChecks, ModerationService
from .services.policy import GuardPolicy, MessageGuard
from .services.presence import MemoryPresenceStore, PresenceStore
from .services.ratelimit import AddressPolicy, MemoryRateLimitStore, RateLimitStore
from .services.reactions import ReactionService
from .services.rooms import RoomCache, RoomPolicy, RoomService
from .services.spam import MemoryRecentStore, RecentStore, SpamDetector, SpamRules
from .storage.db import Database
from .storage.messages import MessageStore
from .storage.moderation import ModerationStore
from .storage.presence_redis import RedisPresenceStore
from .storage.ratelimit_redis import FailSoftRateLimitStore, RedisRateLimitStore
from .storage.reactions import ReactionStore
from .storage.recent_redis import FailSoftRecentStore, RedisRecentStore
from .storage.redis_client import waiting_client
from .storage.redis_pipeline import AutoPipeline
from .storage.resilient import FailSoftPresence
from .storage.rooms import RoomStore

log = logging.getLogger(__name__)

MAX_HTTP_BODY = 256 * 1024


@dataclass
class Components:
    """Everything ``create_app`` built, for the CLI, tests and benchmarks."""

    settings: Settings
    db: Database
    redis: Redis | None
    sio: socketio.AsyncServer
    rooms: RoomService
    messages: MessageService
    presence: PresenceStore
    sessions: ChatSessions
    broadcaster: Broadcaster
    metrics: Metrics
    node_id: str
    guard: MessageGuard | None = None
    limiter: RateLimitStore | None = None
    moderation: ModerationService | None = None
    message_store: MessageStore | None = None  # batch counters (group commit)
    redis_pipeline: AutoPipeline | None = None  # batch counters (Redis auto-pipelining)


COMPONENTS_KEY = web.AppKey("components", Components)


def _client_manager(settings: Settings) -> LocalDeliveryHook:
    if settings.redis_url:
        return RedisManager(settings.redis_url, channel=f"{settings.redis_prefix}:socketio")
    return LocalManager()


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time, migrate: bool = False) -> web.Application:
    """Build the aiohttp application for ``settings``; ``settings.database_url`` must be set
    (the CLI starts the embedded PostgreSQL first when it is not).  With ``migrate``, the
    schema is brought up to date at start-up (retrying while PostgreSQL is down)."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (start the embedded database first)")

    node_id = uuid.uuid4().hex[:12]
    metrics = Metrics()
    db = Database(settings.database_url, pool_size=settings.db_pool_size, timeout_s=settings.db_timeout_s)
    redis: Redis | None = None
    pipeline: AutoPipeline | None = None
    presence: PresenceStore
    gate: Gate
    if settings.redis_url:
        redis = waiting_client(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10)
        presence = FailSoftPresence(
            RedisPresenceStore(redis, prefix=settings.redis_prefix, ttl_s=settings.presence_ttl_s, clock=clock),
            MemoryPresenceStore(settings.presence_ttl_s, clock),
        )
        gate = RedisGate(redis, settings.redis_prefix)
        # Limits take Redis's clock (one clock for every node) unless a clock was injected.
        # The send path's small commands (limits, recent messages) share round trips.
        pipeline = AutoPipeline(redis)
        limiter: RateLimitStore = FailSoftRateLimitStore(
            RedisRateLimitStore(redis, prefix=settings.redis_prefix, clock=None if clock is time.time else clock, pipeline=pipeline),
            MemoryRateLimitStore(clock))
        recent: RecentStore = FailSoftRecentStore(RedisRecentStore(redis, prefix=settings.redis_prefix, clock=clock, pipeline=pipeline),
                                                  MemoryRecentStore(clock))
    else:
        presence = MemoryPresenceStore(settings.presence_ttl_s, clock)
        gate = MemoryGate()
        limiter = MemoryRateLimitStore(clock)
        recent = MemoryRecentStore(clock)

    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=_client_manager(settings),
        cors_allowed_origins=list(settings.cors_allowed_origins) if isinstance(settings.cors_allowed_origins, tuple) else "*",
        # Handle one client's events in order (a client's messages keep their order);
        # different clients still run concurrently.
        async_handlers=False,
        max_http_buffer_size=MAX_HTTP_BODY,
        ping_interval=25,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
        # orjson behind the json interface (process-wide in python-socketio): packets in
        # and out, acks, the Redis bus; realtime/fanout.py says where it differs.
        json=orjson_module,
    )
    sio.packet_class = ChatPacket  # python-socketio's packet with a cheaper binary check (realtime/packets.py)
    if settings.fast_fanout:
        # room_stats may wait a quarter of its own interval for a socket's next write.
        fanout = FastFanout(sio, slow_client_buffer_bytes=settings.slow_client_buffer_bytes,
                            write_delay_s=settings.fanout_write_delay_s, write_batch=settings.fanout_write_batch,
                            lazy_delay_s=settings.room_stats_interval_s / 4)
        if fanout.install():
            sio.manager.fanout = fanout
            metrics.watch_fanout(fanout.stats)
            if settings.lean_websockets:  # before sio.attach: it serves the Engine.IO endpoint's GETs
                LeanWebSockets(sio, fanout, environ_keys=ENVIRON_KEYS, overlapping=OVERLAPPING_EVENTS).install()

    room_store = RoomStore(db)

    async def stats_of(room_ids: list[str]) -> dict[str, dict[str, Any]]:
        counts = await room_store.message_counts(room_ids)
        return {room_id: {"online_users": await presence.count(room_id), "message_count": counts.get(room_id, 0)} for room_id in room_ids}

    stats = RoomStatsCoalescer(gate, stats_of, interval_s=settings.room_stats_interval_s)
    broadcaster = Broadcaster(sio, stats)
    rooms = RoomService(room_store, presence, RoomPolicy(default_room=settings.default_room, auto_create_rooms=settings.auto_create_rooms),
                        events=broadcaster, cache=RoomCache(settings.room_cache_ttl_s) if settings.room_cache_ttl_s > 0 else None)
    message_store = MessageStore(db, batching=settings.message_batching, max_batch=settings.message_batch_max,
                                 max_in_flight=settings.message_batch_in_flight, on_batch=metrics.count_batch)
    addresses = AddressPolicy(settings.rate_limit_ip_exempt)
    guard = MessageGuard(
        limiter=limiter, recent=recent, moderators=rooms, replayed=message_store.by_client_msg_id, addresses=addresses,
        spam=SpamDetector(SpamRules(max_links=settings.spam_max_links, max_repeated_chars=settings.spam_max_repeated_chars,
                                    duplicate_window_ms=settings.spam_duplicate_window_ms, max_repeats=settings.spam_max_repeats,
                                    similarity=settings.spam_similarity), recent),
        policy=GuardPolicy(rate_window_ms=settings.rate_limit_window_ms, rate_max_per_user=settings.rate_limit_max_messages,
                           rate_max_per_ip=settings.chat_ip_limit, moderation=settings.enable_moderation,
                           profanity=settings.enable_profanity_filter, spam=settings.enable_spam_detection,
                           unique_window_ms=settings.unique_chat_window_ms, unique_history=settings.unique_chat_history),
    )
    moderation_store = ModerationStore(db)
    bans = BanChecks(moderation_store, clock=clock)
    messages = MessageService(
        message_store, rooms, broadcaster,
        MessageLimits(max_length=settings.max_message_length, history_limit=settings.message_history_limit,
                      max_mentions=settings.max_mentions),
        mentions=room_store, guard=guard, bans=bans,
    )
    moderation = ModerationService(moderation_store, bans, rooms, room_store, messages, broadcaster, guard=guard)
    rooms.audited_update = moderation.update_room  # PATCH /api/rooms: mode changes audited in the same transaction
    reactions = ReactionService(ReactionStore(db), messages, broadcaster, names=settings.reaction_names, guard=guard, bans=bans)
    registry = ConnectionRegistry(node_id)
    sio.manager.local_sids_of = registry.sids_of  # expands "every connection of a user" skips
    # Node-local moderation: ban removal, ban-cache invalidation and block filtering,
    # run by the manager before every local delivery (realtime/moderation_relay.py).
    live_moderation = LiveModeration(moderation, bans, registry)
    sio.manager.local_filters.append(live_moderation)
    sio.manager.local_filters.append(RoomCacheRelay(rooms))  # room_updated drops the room from every node's cache
    sessions = ChatSessions(
        rooms=rooms, messages=messages, reactions=reactions, presence=presence, broadcaster=broadcaster, registry=registry,
        policy=LivePolicy(typing_throttle_s=settings.typing_throttle_s, typing_ttl_s=settings.typing_ttl_s,
                          big_room_threshold=settings.big_room_threshold),
        moderation=live_moderation,
    )
    live_moderation.bind(sessions)
    verifier = TokenVerifier(settings)
    drain = Drain()
    socketio_handlers = SocketIOHandlers(
        sio, sessions, verifier,
        auto_join_room=settings.default_room if settings.auto_join_default_room else None,
        on_result=metrics.count_event,
        drain=drain,
    )
    socketio_handlers.register()

    app = web.Application(client_max_size=MAX_HTTP_BODY, middlewares=[
        forwarded_middleware(TrustedProxies(settings.trusted_proxies)),  # first: everything after sees the client's address
        error_middleware, auth_middleware,
        rest_rate_limit_middleware(limiter, RestLimits(settings.rest_rate_limit_window_ms, settings.rest_rate_limit_max_requests, settings.rest_ip_limit),
                                   addresses),
        validation_middleware])
    app[VERIFIER_KEY] = verifier
    components = Components(settings, db, redis, sio, rooms, messages, presence, sessions, broadcaster, metrics, node_id, guard, limiter, moderation,
                            message_store=message_store, redis_pipeline=pipeline)
    app[COMPONENTS_KEY] = components

    sio.attach(app, socketio_path="socket.io")
    RoomsApi(rooms, messages, presence).add_routes(app)
    PagesApi().add_routes(app)  # demo page /, /embed/{room_id}, /static/
    if not settings.is_production and settings.jwt_algorithm == "HS256":
        DevTokenApi(TokenIssuer(settings)).add_routes(app)  # development sign-in, never in production
    ModerationApi(moderation).add_routes(app)
    setup_ws(app, sio, sessions, verifier, default_room=settings.default_room, count_online=presence.count,
             allowed_origins=settings.cors_allowed_origins, on_result=metrics.count_event,
             connections_gauge=metrics.connections.labels(transport="ws"), drain=drain, drain_timeout_s=settings.shutdown_timeout_s / 2)

    async def redis_ok() -> bool:
        assert redis is not None
        return bool(await redis.ping())

    serving = {"ready": False}

    async def node_ok() -> bool:
        # Not ready while starting (schema, database) or draining for shutdown.
        return serving["ready"] and not drain.closing

    HealthApi(
        {"node": node_ok, "postgres": db.ping, "redis": redis_ok if redis is not None else None},
        metrics.registry if settings.metrics_enabled else None,
    ).add_routes(app)

    setup_aiohttp_apispec(
        app,
        title="Chat service API",
        version="1",
        url="/api/chats/openapi.json",
        swagger_path="/api/chats/docs",
        static_path="/api/chats/static",
        error_callback=validation_error_callback,
        openapi_version="3.0.2",
        components={"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    )

    background: list[asyncio.Task[Any]] = []

    async def heartbeat() -> None:
        # Keep this node's presence entries alive; a dead node's entries expire, and the
        # first node to sweep after that announces its users' departure.
        while True:
            await asyncio.sleep(settings.presence_ttl_s / 3)
            try:
                await sessions.keep_presence()
            except Exception:
                log.exception("presence heartbeat failed")

    async def become_ready() -> None:
        # Wait for PostgreSQL (and bring the schema up to date) without blocking the
        # HTTP server: /healthz answers meanwhile, /readyz says why it is not ready.
        delay = 0.5
        while True:
            try:
                if migrate:
                    await asyncio.get_running_loop().run_in_executor(None, apply_migrations, settings.database_url or "")
                await db.connect()
                serving["ready"] = True
                log.info("node %s ready (%s)", node_id, settings.mode)
                return
            except Exception as exc:
                log.warning("PostgreSQL is not ready (%s); retrying in %.1fs", str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def on_startup(app: web.Application) -> None:
        background.append(asyncio.create_task(become_ready()))
        background.append(asyncio.create_task(stats.run(broadcaster.room_stats)))
        background.append(asyncio.create_task(heartbeat()))

    async def on_shutdown(app: web.Application) -> None:
        # Graceful: refuse new events, let those in flight answer their acks, then drop
        # the connections so clients reconnect elsewhere and catch up by since_seq, and
        # finish every departure (user_left, presence) before the stores close.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.shutdown_timeout_s
        if not await drain.close(settings.shutdown_timeout_s / 2):
            log.warning("shutdown: %d event(s) still in flight after %.1fs", drain.in_flight, settings.shutdown_timeout_s / 2)
        try:
            await asyncio.wait_for(socketio_handlers.close_all(), settings.shutdown_timeout_s / 2)
        except TimeoutError:
            log.warning("shutdown: closing the Socket.IO connections took longer than %.1fs", settings.shutdown_timeout_s / 2)
        except Exception:  # the stop goes on: departures and the stores' close still matter
            log.exception("shutdown: closing the Socket.IO connections failed")
        # Clients that were leaving on their own as the stop began: their cleanups may still
        # be under way (a thousand at once take a while).  At least a second, even when the
        # steps above used the whole grace period.
        if not await socketio_handlers.departures.wait(max(1.0, deadline - loop.time())):
            log.warning("shutdown: some departures were still being announced when the grace period ended")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sio.shutdown(), 2)

    async def on_cleanup(app: web.Application) -> None:
        for task in background:
            task.cancel()
        # A task can lose a cancellation that lands just as what it awaits completes (Python
        # 3.11's asyncio.wait_for, which redis-py uses per command) and wait on forever:
        # cancelled again until it ends.
        pending = {task for task in background if not task.done()}
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            for task in pending:
                task.cancel()
        for task in background:
            with contextlib.suppress(BaseException):
                await task
        # Cache reloads started by the last messages: short reads, let them end first.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(rooms.refresher.wait(), bans.refresher.wait()), 2)
        await db.close()
        if redis is not None:
            await redis.aclose()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
