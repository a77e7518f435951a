"""The gateway's gRPC services from Python's own gRPC stack (grpcio), each answer checked.

Owns the Python side of tests/grpc_python.rs. Stubs are generated at run time by
grpc_tools.protoc from the committed protos (proto/orgo/agent/v1/agent.proto and
proto/orgo/v1/computers.proto) into a temporary directory, so the check follows the protos. It
creates a computer with orgo.v1.Computers, drives it with orgo.agent.v1.Agent (screen info, a PNG
screenshot, a click, typing, a streamed bash run, one live frame, a desktop token), deletes it,
and checks the error codes and sentences (bad key, another account's key, an off-screen click, a
stopped desktop, the rate limit's RetryInfo), server reflection v1 and grpc.health.v1.

Environment: ORGO_GRPC_TARGET (host:port), ORGO_API_KEY, ORGO_OTHER_KEY (another account's key),
ORGO_WORKSPACE_ID (a workspace of ORGO_API_KEY's account). Prints one line per check and
`grpc: ok` at the end; exits non-zero at the first failed check, saying what failed.
"""

import atexit
import collections
import importlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import grpc_tools
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status
from grpc_tools import protoc
from PIL import Image

PROTO = Path(__file__).resolve().parents[2] / "proto"
TARGET = os.environ["ORGO_GRPC_TARGET"]
KEY = os.environ["ORGO_API_KEY"]
OTHER_KEY = os.environ["ORGO_OTHER_KEY"]
WORKSPACE = os.environ["ORGO_WORKSPACE_ID"]
# Every call has a deadline: a hang fails the check as DEADLINE_EXCEEDED instead of stalling.
DEADLINE = 60
passed = 0


class Failed(Exception):
    pass


def check(what, ok, detail=""):
    global passed
    if not ok:
        raise Failed(f"{what} {detail}".strip())
    passed += 1
    print(f"ok: {what}", flush=True)


def rejected(what, call, code, words=None):
    """Runs `call`, which must fail with `code` and a message containing each of `words`
    (or equal to `words` when it is a str); answers the error."""
    try:
        answer = call()
    except grpc.RpcError as e:
        got = (e.code(), e.details())
        if e.code() != code:
            raise Failed(f"{what}: expected {code.name}, got {got[0].name}: {got[1]!r}") from None
        if isinstance(words, str) and e.details() != words:
            raise Failed(f"{what}: expected the message {words!r}, got {e.details()!r}") from None
        for w in words if isinstance(words, list) else []:
            if w not in e.details():
                raise Failed(f"{what}: {w!r} missing from the message {e.details()!r}") from None
        check(f"{what} → {code.name}: {e.details()}", True)
        return e
    raise Failed(f"{what}: expected {code.name}, got an answer: {answer!r}")


def stubs():
    """Python modules generated from the committed protos: agent_pb2, agent_grpc, computers_pb2,
    computers_grpc."""
    out = tempfile.mkdtemp(prefix="orgo-grpc-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "orgo/agent/v1/agent.proto",
        "orgo/v1/computers.proto",
    ]
    if protoc.main(args) != 0:
        sys.exit(f"FAILED: grpc_tools.protoc could not compile the protos under {PROTO}")
    sys.path.insert(0, out)
    names = [
        "orgo.agent.v1.agent_pb2",
        "orgo.agent.v1.agent_pb2_grpc",
        "orgo.v1.computers_pb2",
        "orgo.v1.computers_pb2_grpc",
    ]
    return [importlib.import_module(n) for n in names]


agent_pb2, agent_grpc, computers_pb2, computers_grpc = stubs()


def auth(key, computer=None):
    md = [("authorization", f"Bearer {key}")]
    if computer is not None:
        md.append(("x-orgo-computer", computer))
    return md


def reflection(channel, requests):
    """The answers of server reflection v1 (grpc.reflection.v1.ServerReflection) to `requests`.
    grpcio-reflection ships message classes of v1alpha only; v1's messages are the same, field
    for field, so they are sent on v1's method."""
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = list(info(iter(requests), timeout=DEADLINE))
    for a in answers:
        if a.HasField("error_response"):
            raise Failed(f"reflection answered an error: {a.error_response}")
    return answers


def served_file(channel, symbol):
    """A descriptor pool holding the file that defines `symbol`, as reflection serves it."""
    [answer] = reflection(channel, [reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)])
    files = {}
    for raw in answer.file_descriptor_response.file_descriptor_proto:
        f = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[f.name] = f
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)

    for name in files:
        add(name)
    return pool


def check_reflection_and_health(channel):
    [listed] = reflection(channel, [reflection_pb2.ServerReflectionRequest(list_services="")])
    services = {s.name for s in listed.list_services_response.service}
    for s in ["orgo.agent.v1.Agent", "orgo.v1.Computers", "grpc.health.v1.Health"]:
        check(f"reflection lists {s}", s in services, f"(listed: {sorted(services)})")

    served = served_file(channel, "orgo.agent.v1.Agent").FindServiceByName("orgo.agent.v1.Agent")
    ours = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
    check(
        "reflection's orgo.agent.v1.Agent has the committed proto's methods",
        {m.name for m in served.methods} == {m.name for m in ours.methods},
        f"served {sorted(m.name for m in served.methods)}, proto {sorted(m.name for m in ours.methods)}",
    )

    # grpc.health.v1 from the descriptor reflection serves, as grpcurl would call it.
    pool = served_file(channel, "grpc.health.v1.Health")
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest"))
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")
    )
    statuses = pool.FindEnumTypeByName("grpc.health.v1.HealthCheckResponse.ServingStatus")
    health = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    for service in ["", "orgo.agent.v1.Agent", "orgo.v1.Computers"]:
        got = statuses.values_by_number[health(request(service=service), timeout=DEADLINE).status].name
        check(f"Health.Check({service!r}) is SERVING", got == "SERVING", f"(got {got})")


def wait_running(computers, name):
    deadline = time.time() + 120
    while True:
        c = computers.Get(computers_pb2.ComputerRef(computer=name), metadata=auth(KEY), timeout=DEADLINE)
        if c.status == "running" or time.time() > deadline:
            return c
        if c.status == "error":
            raise Failed(f"computer {name} is in error: {c.status_reason}")
        time.sleep(0.5)


def drive(channel, computers, agent, name):
    created = computers.Create(
        computers_pb2.CreateRequest(
            workspace_id=WORKSPACE,
            name=name,
            ram_gb=2,
            cpu=1,
            resolution="1024x768x24",
            disk_size_gb=3,
            auto_stop_minutes=0,
        ),
        metadata=auth(KEY),
        timeout=DEADLINE * 2,
    )
    check(
        f"Computers.Create: {created.name} ({created.status})",
        created.name == name
        and created.workspace_id == WORKSPACE
        and created.ram_gb == 2
        and created.cpu == 1
        and created.resolution == "1024x768x24"
        and (created.screen_width, created.screen_height) == (1024, 768)
        and created.disk_size_gb == 3
        # 0: it never stops by itself, so no idle time is in force.
        and not created.HasField("auto_stop_minutes"),
        repr(created),
    )
    computer = wait_running(computers, name)
    check("the computer runs", computer.status == "running", f"(status {computer.status!r})")
    listed = computers.List(
        computers_pb2.ListRequest(workspace_id=WORKSPACE), metadata=auth(KEY), timeout=DEADLINE
    )
    check("Computers.List has it", [c.id for c in listed.computers] == [created.id], repr(listed))
    md = auth(KEY, name)

    info = agent.ScreenInfo(agent_pb2.ScreenInfoRequest(), metadata=md, timeout=DEADLINE)
    w, h = info.width, info.height
    check(
        f"Agent.ScreenInfo: {w}x{h}",
        w > 0 and h > 0 and (w, h) == (computer.screen_width, computer.screen_height),
        f"(the computer says {computer.screen_width}x{computer.screen_height})",
    )

    shot = agent.Screenshot(
        agent_pb2.ScreenshotRequest(format=agent_pb2.IMAGE_FORMAT_PNG), metadata=md, timeout=DEADLINE
    )
    image = Image.open(io.BytesIO(shot.image))
    check(
        f"Agent.Screenshot: a {image.size[0]}x{image.size[1]} PNG",
        image.format == "PNG"
        and shot.format == agent_pb2.IMAGE_FORMAT_PNG
        and image.size == (w, h)
        and (shot.width, shot.height) == (w, h),
        f"(format {image.format}, says {shot.width}x{shot.height})",
    )

    at = agent_pb2.Point(x=w // 3, y=h // 3)
    clicked = agent.Click(agent_pb2.ClickRequest(at=at), metadata=md, timeout=DEADLINE)
    where = agent.CursorPosition(agent_pb2.CursorPositionRequest(), metadata=md, timeout=DEADLINE)
    check(
        f"Agent.Click at ({at.x}, {at.y}) leaves the pointer there",
        (clicked.position.x, clicked.position.y) == (at.x, at.y) == (where.position.x, where.position.y),
        f"(click says {clicked.position}, cursor {where.position})",
    )

    text = "hello grpc"
    typed = agent.TypeText(agent_pb2.TypeTextRequest(text=text), metadata=md, timeout=DEADLINE)
    check(f"Agent.TypeText sent {typed.sent} characters", typed.sent == len(text))

    events = list(
        agent.ExecStream(
            agent_pb2.ExecRequest(
                interpreter=agent_pb2.INTERPRETER_BASH, source="echo hi; echo err >&2; exit 3"
            ),
            metadata=md,
            timeout=DEADLINE,
        )
    )
    kinds = [e.WhichOneof("event") for e in events]
    out = b"".join(e.stdout for e in events if e.WhichOneof("event") == "stdout")
    err = b"".join(e.stderr for e in events if e.WhichOneof("event") == "stderr")
    check(
        "Agent.ExecStream streams stdout and stderr, then the exit alone at the end",
        out == b"hi\n" and err == b"err\n" and kinds.count("exit") == 1 and kinds[-1] == "exit",
        f"(stdout {out!r}, stderr {err!r}, events {kinds})",
    )
    end = events[-1].exit
    check(
        "the exit event has exit_code 3",
        end.HasField("exit_code") and end.exit_code == 3 and not end.HasField("signal") and not end.timed_out,
        repr(end),
    )
    check(
        "the exit event's stdout and stderr are empty (streamed)",
        end.stdout == b"" and end.stderr == b"",
        repr(end),
    )

    watch = agent.WatchScreen(agent_pb2.WatchScreenRequest(max_fps=5), metadata=md, timeout=DEADLINE)
    frame = next(watch)
    picture = Image.open(io.BytesIO(frame.jpeg))
    check(
        f"Agent.WatchScreen: a {picture.size[0]}x{picture.size[1]} JPEG frame",
        picture.format == "JPEG" and picture.size == (w, h) and (frame.width, frame.height) == (w, h),
        f"(format {picture.format}, says {frame.width}x{frame.height})",
    )
    watch.cancel()
    try:
        for _ in watch:
            pass
        ended = None
    except grpc.RpcError as e:
        ended = e.code()
    check("the watch ends CANCELLED when cancelled", ended == grpc.StatusCode.CANCELLED, f"(got {ended})")

    token = computers.CreateDesktopToken(
        computers_pb2.DesktopTokenRequest(computer=name, ttl_seconds=60), metadata=auth(KEY), timeout=DEADLINE
    )
    check(
        "Computers.CreateDesktopToken",
        token.token and token.token != KEY and token.mode == "desktop" and token.computer == created.id,
        repr(token),
    )
    for label, meta in [("alone", auth(token.token)), ("with x-orgo-computer", auth(token.token, name))]:
        by_token = agent.ScreenInfo(agent_pb2.ScreenInfoRequest(), metadata=meta, timeout=DEADLINE)
        check(f"Agent.ScreenInfo with the desktop token {label}", (by_token.width, by_token.height) == (w, h))
    rejected(
        "Computers.List with a desktop token",
        lambda: computers.List(computers_pb2.ListRequest(), metadata=auth(token.token), timeout=DEADLINE),
        grpc.StatusCode.UNAUTHENTICATED,
    )

    # Errors.
    for what, call in [
        (
            "Agent.ScreenInfo",
            lambda m: agent.ScreenInfo(agent_pb2.ScreenInfoRequest(), metadata=m, timeout=DEADLINE),
        ),
        (
            "Computers.List",
            lambda m: computers.List(computers_pb2.ListRequest(), metadata=m, timeout=DEADLINE),
        ),
    ]:
        bad = auth(KEY[:-1] + ("a" if KEY[-1] != "a" else "b"), name)  # shaped as a key, not one
        none = [("x-orgo-computer", name)]
        for how, meta in [("with a bad key", bad), ("without a key", none)]:
            rejected(f"{what} {how}", lambda c=call, m=meta: c(m), grpc.StatusCode.UNAUTHENTICATED)

    missing = "no-such-grpc-computer"
    rejected(
        "Agent.Screenshot of a missing computer",
        lambda: agent.Screenshot(
            agent_pb2.ScreenshotRequest(), metadata=auth(KEY, missing), timeout=DEADLINE
        ),
        grpc.StatusCode.NOT_FOUND,
        f'computer "{missing}" not found',
    )
    for ref in [name, created.id]:
        rejected(
            f"Agent.Screenshot of {ref} with another account's key",
            lambda r=ref: agent.Screenshot(
                agent_pb2.ScreenshotRequest(), metadata=auth(OTHER_KEY, r), timeout=DEADLINE
            ),
            grpc.StatusCode.NOT_FOUND,
            f'computer "{ref}" not found',
        )
    rejected(
        "Computers.Get with another account's key",
        lambda: computers.Get(
            computers_pb2.ComputerRef(computer=name), metadata=auth(OTHER_KEY), timeout=DEADLINE
        ),
        grpc.StatusCode.NOT_FOUND,
        f'computer "{name}" not found',
    )
    rejected(
        "Agent.Exec with another account's key",
        lambda: agent.Exec(
            agent_pb2.ExecRequest(source="touch grpc-intruder"),
            metadata=auth(OTHER_KEY, name),
            timeout=DEADLINE,
        ),
        grpc.StatusCode.NOT_FOUND,
        f'computer "{name}" not found',
    )
    looked = agent.Exec(agent_pb2.ExecRequest(source="test -e grpc-intruder"), metadata=md, timeout=DEADLINE)
    check("… and ran nothing there", looked.HasField("exit_code") and looked.exit_code == 1, repr(looked))
    rejected(
        "Computers.CreateDesktopToken with another account's key",
        lambda: computers.CreateDesktopToken(
            computers_pb2.DesktopTokenRequest(computer=name), metadata=auth(OTHER_KEY), timeout=DEADLINE
        ),
        grpc.StatusCode.NOT_FOUND,
        f'computer "{name}" not found',
    )
    rejected(
        "Agent.Click off the screen",
        lambda: agent.Click(
            agent_pb2.ClickRequest(at=agent_pb2.Point(x=5000, y=10)), metadata=md, timeout=DEADLINE
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["at.x", "5000"],
    )
    rejected(
        "Computers.Create with a resolution that is not WIDTHxHEIGHTxDEPTH",
        lambda: computers.Create(
            computers_pb2.CreateRequest(workspace_id=WORKSPACE, resolution="1024 by 768"),
            metadata=auth(KEY),
            timeout=DEADLINE,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["resolution", "WIDTHxHEIGHTxDEPTH"],
    )
    rejected(
        "Agent.ScreenInfo naming no computer",
        lambda: agent.ScreenInfo(agent_pb2.ScreenInfoRequest(), metadata=auth(KEY), timeout=DEADLINE),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["x-orgo-computer"],
    )

    stopped = computers.Stop(computers_pb2.ComputerRef(computer=name), metadata=auth(KEY), timeout=DEADLINE)
    check(f"Computers.Stop: {stopped.status}", stopped.status in ("stopping", "stopped"), repr(stopped))
    rejected(
        "Agent.ScreenInfo of a stopped computer",
        lambda: agent.ScreenInfo(agent_pb2.ScreenInfoRequest(), metadata=md, timeout=DEADLINE),
        grpc.StatusCode.FAILED_PRECONDITION,
    )

    deleted = computers.Delete(computers_pb2.ComputerRef(computer=name), metadata=auth(KEY), timeout=DEADLINE)
    check("Computers.Delete", deleted.id == created.id, repr(deleted))
    rejected(
        "Computers.Get after the delete",
        lambda: computers.Get(computers_pb2.ComputerRef(computer=name), metadata=auth(KEY), timeout=DEADLINE),
        grpc.StatusCode.NOT_FOUND,
        f'computer "{name}" not found',
    )


def check_rate_limit(computers):
    """Many more calls at once than the plan's rate (50 a second, bursts of 100): the excess is
    RESOURCE_EXHAUSTED with google.rpc.RetryInfo in the status details."""
    many = 400
    calls = [
        computers.List.future(computers_pb2.ListRequest(), metadata=auth(KEY), timeout=DEADLINE)
        for _ in range(many)
    ]
    codes = collections.Counter()
    limited = None
    for call in calls:
        try:
            call.result()
            codes["OK"] += 1
        except grpc.RpcError as e:
            codes[e.code().name] += 1
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                limited = limited or e
    check(
        f"{many} Computers.List at once: {dict(codes)}",
        set(codes) == {"OK", "RESOURCE_EXHAUSTED"},
        "(expected some answered and some RESOURCE_EXHAUSTED, nothing else)",
    )
    status = rpc_status.from_call(limited)
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)] if status else []
    delay = None
    if retry:
        info = error_details_pb2.RetryInfo()
        retry[0].Unpack(info)
        delay = info.retry_delay.ToTimedelta().total_seconds()
    check(
        f"RESOURCE_EXHAUSTED says when to retry (google.rpc.RetryInfo: {delay} s): {limited.details()}",
        delay is not None and 0 < delay <= 60,
        f"(status details {status})",
    )


def main():
    name = f"grpc-check-{os.getpid()}"
    with grpc.insecure_channel(TARGET) as channel:
        computers = computers_grpc.ComputersStub(channel)
        agent = agent_grpc.AgentStub(channel)
        try:
            check_reflection_and_health(channel)
            drive(channel, computers, agent, name)
            check_rate_limit(computers)
        except (Failed, grpc.RpcError, StopIteration) as e:
            if isinstance(e, grpc.RpcError):
                e = f"unexpected {e.code().name}: {e.details()}"
            print(f"FAILED: {e}", flush=True)
            try:  # Leave no desktop behind.
                computers.Delete(
                    computers_pb2.ComputerRef(computer=name), metadata=auth(KEY), timeout=DEADLINE
                )
            except grpc.RpcError:
                pass
            sys.exit(1)
    print(f"grpc: ok ({passed} checks)", flush=True)


if __name__ == "__main__":
    main()
