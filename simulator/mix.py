"""The postbacks of one simulated run, generated from a seed. PURE: no I/O, no clock, no globals.

What a postback URL receives in a day, in miniature (postback-formats.md §2, §4, §6):
- MT messages (MMS 45 %, SMS 35 % of messages): a "sent" postback (N101 / N201) and, when the
  carrier returns a receipt, a final one (delivered, expired, failed, rejected) seconds later
  under the same tracking id. One MT message in ten gets no receipt, as with real carriers; so
  does a message whose receipt would come after the run's last postback.
- MO messages: inbound SMS (N211, 12 %) and MMS (N401, 8 %), one postback each.
- A message is v2 JSON or v1 XML as a whole (an account speaks one API version): `xml_share`
  is the chance that a message is v1 XML, and so about the share of well-formed postbacks in XML.
- `malformed_share` of all postbacks are bodies the pipeline must dead-letter, in shapes the
  docs or a bad hop produce: truncated JSON or XML, no origin or code, an API error document,
  a JSON array, empty or binary bodies, invalid UTF-8, an unclosed tag, a DOCTYPE.

The same `MixSpec` always gives the same postbacks, byte for byte. Tracking ids embed the seed,
so runs with different seeds never share a notification (nor a dedupe identity).
"""

from __future__ import annotations

import base64
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, Literal, TypeAlias
from xml.sax.saxutils import escape

import orjson

Wire = Literal["v2_json", "v1_xml", "malformed"]
Stage = Literal["sent", "final", "inbound", "malformed"]

JSON: Final = "application/json"
XML: Final = "text/xml"
BINARY: Final = "application/octet-stream"

# Bounds a run's memory: every postback of a run is held, with its fate, until the report.
MAX_COUNT: Final = 10_000_000


@dataclass(frozen=True, slots=True)
class Postback:
    """One notification exactly as the provider sends it, and every retry resends these bytes.

    `kind` is "<origin>/<code>" ("MMS_MT/N101") or "malformed/<shape>". `tracking_id` links the
    sent and final postbacks of one message; on a malformed body it is the id the body carries
    ("BAD..."; None when it carries none), which no well-formed postback ever uses.
    """

    kind: str
    wire: Wire
    stage: Stage
    tracking_id: str | None
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class MixSpec:
    """What to generate. `start` is the provider time of the first message (timestamps only)."""

    count: int
    seed: int
    xml_share: float = 0.1
    malformed_share: float = 0.01
    start: datetime = datetime(2024, 3, 5, 14, 0, tzinfo=UTC)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count must be between 1 and {MAX_COUNT}, got {self.count}")
        for name in ("xml_share", "malformed_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {share}")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone")


def generate(spec: MixSpec) -> list[Postback]:
    """`spec.count` postbacks in sending order; finals come after their sent postback."""
    rng = random.Random(spec.seed)  # noqa: S311 - reproducible traffic, not secrets
    postbacks: list[Postback] = []
    receipts: list[tuple[datetime, int, Postback]] = []  # finals waiting for their time
    clock = spec.start
    message = 0
    while len(postbacks) < spec.count:
        if rng.random() < spec.malformed_share:
            postbacks.append(_malformed(rng, spec.seed, len(postbacks), clock))
        elif receipts and receipts[0][0] <= clock:
            postbacks.append(heapq.heappop(receipts)[2])
        else:
            message += 1
            clock += timedelta(microseconds=rng.randrange(50_000, 1_500_000))
            wire: Wire = "v1_xml" if rng.random() < spec.xml_share else "v2_json"
            first, receipt = _message(rng, _Context(spec.seed, message, clock, wire))
            postbacks.append(first)
            if receipt is not None:
                heapq.heappush(receipts, (receipt[0], message, receipt[1]))
    return postbacks


# ----------------------------------------------------------------------------- vocabulary

# Short codes, and one toll-free long code.
_SENDERS: Final = ("60856", "84913", "73981", "18335550142")
_AREA_CODES: Final = ("212", "305", "312", "415", "646", "702", "774", "818")
_OPERATORS: Final = (
    ("0001470", "T-Mobile USA"),
    ("0001570", "Verizon Wireless"),
    ("0001140", "AT&T"),
    ("0001090", "US Cellular"),
)
_CAMPAIGNS: Final = ("spring-promo", "order-updates", "otp", "renewals")
_MO_TEXTS: Final = (
    "STOP",
    "HELP",
    "YES",
    "JOIN",
    "stop please",
    "Where is my order #88412?",
    "Café at 5? ☕",
    "Tom & Jerry <3",
    "👍",
)
_SUBJECTS: Final = ("Receipt", "Photo", "Damaged item", "")
_MEDIA: Final = ("jpg", "png", "mp4", "txt")
_HANDSETS: Final = (("iphone12", "iOS"), ("Pixel 7", "Android"), ("SM-S911U", "Android"))
_V1_ZONE: Final = timezone(timedelta(hours=-5))  # v1 examples carry the provider's local offset

# (weight, v2 code, v2 status, v2 status-details, v1 code, v1 status)
_MMS_FINALS: Final = (
    (80, "N102", "Delivered", "Message Delivered", "N102", "Message Sent/Delivered"),
    (7, "N103", "Expired", "Message Expired", "N102", "Message Sent/Expired"),
    (7, "E101", "Failed", "Message Failed", "E101", "Message Failed"),
    (6, "E102", "Rejected", "Message Rejected", "N102", "Message Sent/Rejected"),
)
_SMS_FINALS: Final = (
    (85, "N202", "Delivered", "", "N202", "Message Sent/Delivered"),
    (8, "E201", "Failed", "", "E201", "Message Failed"),
    (7, "E202", "Rejected", "", "E202", "Message Sent/Expired"),
)
_ORIGINS: Final = (("MMS_MT", 45), ("SMS_MT", 35), ("SMS_MO", 12), ("MMS_MO", 8))
_RECEIPT_RATE: Final = 0.9
_FALLBACK_RATE: Final = 0.1  # delivered MMS that went out as a fallback SMS

_Node: TypeAlias = tuple[str, "str | tuple[str, ...]"]
_Receipt: TypeAlias = tuple[datetime, Postback]


@dataclass(frozen=True, slots=True)
class _Context:
    seed: int
    message: int
    at: datetime
    wire: Wire


def _message(rng: random.Random, ctx: _Context) -> tuple[Postback, _Receipt | None]:
    origin = rng.choices([name for name, _ in _ORIGINS], [weight for _, weight in _ORIGINS])[0]
    if origin == "MMS_MT":
        return _mms_mt(rng, ctx)
    if origin == "SMS_MT":
        return _sms_mt(rng, ctx)
    if origin == "SMS_MO":
        return _sms_mo(rng, ctx), None
    return _mms_mo(rng, ctx), None


def _mms_mt(rng: random.Random, ctx: _Context) -> tuple[Postback, _Receipt | None]:
    tracking_id = _b64(f"MMS_{ctx.seed}_{ctx.message}")
    to, short_code = _recipient(rng), rng.choice(_SENDERS)
    operator_id, operator_name = rng.choice(_OPERATORS)
    final_at = ctx.at + timedelta(seconds=rng.uniform(1.0, 30.0))
    receipt = rng.random() < _RECEIPT_RATE
    _, code, status, details, v1_code, v1_status = _pick(rng, _MMS_FINALS)
    fallback = code == "N102" and rng.random() < _FALLBACK_RATE
    if ctx.wire == "v1_xml":
        mms_id, aggregator = str(rng.randrange(30000, 60000)), _aggregator_id(rng)
        handset, os_name = rng.choice(_HANDSETS)

        def v1(code: str, status: str, at: datetime, final: bool) -> bytes:
            nodes: list[_Node] = [
                ("ORIGIN", "MMS_MT"),
                ("CODE", "N202" if final and fallback else code),
                ("SENTAS", "SMS" if final and fallback else "MMS"),
                ("STATUS", status),
                ("MMSID", mms_id),
                ("FROM", short_code),
                ("TO", to),
                ("TRACKINGID", tracking_id),
                ("SPID", operator_id),
                ("TIMESTAMP", _v1_time(at)),
            ]
            if final and status == "Message Sent/Delivered" and not fallback:
                nodes += [("HANDSET", handset), ("OS", os_name)]
            nodes.append(("AGGREGATORID", aggregator))
            if code == "E101":
                nodes.append(("STATUSDETAILS", "Error fetching dynamic content"))
            return _xml(nodes, declaration=True)

        sent = v1("N101", "Message Sent", ctx.at, final=False)
        final_body = v1(v1_code, v1_status, final_at, final=True)
        final_kind = "N202" if fallback else v1_code
    else:
        document = {
            "origin": "MMS_MT",
            "code": "N101",
            "sent-as": "MMS",
            "status": "Sent",
            "status-details": "Message Sent",
            "from": short_code,
            "to": to,
            "tracking-id": tracking_id,
            "client-reference": f"order-{rng.randrange(10_000, 1_000_000)}",
            "campaign-ref": rng.choice(_CAMPAIGNS),
            "operator-id": operator_id,
            "operator-name": operator_name,
            "timestamp": _v2_time(ctx.at),
        }
        sent = orjson.dumps(document)
        final_doc = {
            **document,
            "code": code,
            "sent-as": "SMS" if fallback else "MMS",
            "status": status,
            "status-details": details,
            "timestamp": _v2_time(final_at),
        }
        final_body = orjson.dumps(final_doc)
        final_kind = code
    content_type = XML if ctx.wire == "v1_xml" else JSON
    first = Postback("MMS_MT/N101", ctx.wire, "sent", tracking_id, sent, content_type)
    if not receipt:
        return first, None
    last = Postback(
        f"MMS_MT/{final_kind}", ctx.wire, "final", tracking_id, final_body, content_type
    )
    return first, (final_at, last)


def _sms_mt(rng: random.Random, ctx: _Context) -> tuple[Postback, _Receipt | None]:
    tracking_id = _b64(f"SMS_{ctx.seed}_{ctx.message}")
    to, short_code = _recipient(rng), rng.choice(_SENDERS)
    operator_id, operator_name = rng.choice(_OPERATORS)
    from_mask = "ACMEALERTS" if rng.random() < 0.1 else None
    final_at = ctx.at + timedelta(seconds=rng.uniform(1.0, 30.0))
    receipt = rng.random() < _RECEIPT_RATE
    _, code, status, _, v1_code, v1_status = _pick(rng, _SMS_FINALS)
    if ctx.wire == "v1_xml":
        aggregator = _aggregator_id(rng)

        def v1(code: str, status: str, at: datetime) -> bytes:
            nodes: list[_Node] = [
                ("ORIGIN", "SMS_MT"),
                ("CODE", code),
                ("STATUS", status),
                ("FROM", short_code),
            ]
            if from_mask is not None:
                nodes.append(("FROM_MASK", from_mask))
            nodes += [
                ("TO", to),
                ("TRACKINGID", tracking_id),
                ("SPID", operator_id),
                ("TIMESTAMP", _v1_time(at)),
                ("AGGREGATORID", aggregator),
            ]
            if code.startswith("E"):
                nodes.append(("STATUSDETAILS", "Validity period elapsed"))
            return _xml(nodes, declaration=True)

        sent = v1("N201", "Message Sent", ctx.at)
        final_body = v1(v1_code, v1_status, final_at)
        final_kind = v1_code
    else:
        document = {
            "origin": "SMS_MT",
            "code": "N201",
            "sent-as": "SMS",
            "status": "Sent",
            "from": short_code,
            "to": to,
            "tracking-id": tracking_id,
            "operator-id": operator_id,
            "operator-name": operator_name,
            "campaign-ref": rng.choice(_CAMPAIGNS),
            "timestamp": _v2_time(ctx.at),
        }
        if from_mask is not None:
            document["from-mask"] = from_mask
        sent = orjson.dumps(document)
        final_body = orjson.dumps(
            {**document, "code": code, "status": status, "timestamp": _v2_time(final_at)}
        )
        final_kind = code
    content_type = XML if ctx.wire == "v1_xml" else JSON
    first = Postback("SMS_MT/N201", ctx.wire, "sent", tracking_id, sent, content_type)
    if not receipt:
        return first, None
    last = Postback(
        f"SMS_MT/{final_kind}", ctx.wire, "final", tracking_id, final_body, content_type
    )
    return first, (final_at, last)


def _sms_mo(rng: random.Random, ctx: _Context) -> Postback:
    tracking_id = f"smsmo{ctx.seed:x}x{ctx.message:x}"
    sender, short_code, text = _recipient(rng), rng.choice(_SENDERS), rng.choice(_MO_TEXTS)
    if ctx.wire == "v1_xml":
        body = _xml(
            [
                ("ORIGIN", "SMS_MO"),
                ("CODE", "N211"),
                ("FROM", sender),
                ("TO", short_code),
                ("TEXT", text),
                ("RECEIVED", _v1_time(ctx.at)),
                ("TRANSACTIONID", tracking_id),
            ],
            declaration=False,
        )
        return Postback("SMS_MO/N211", ctx.wire, "inbound", tracking_id, body, XML)
    document = {
        "origin": "SMS_MO",
        "code": "N211",
        "from": sender,
        "to": short_code,
        "message-text": text,
        "tracking-id": tracking_id,
        "timestamp": _v2_time(ctx.at, fraction=False),
    }
    return Postback("SMS_MO/N211", ctx.wire, "inbound", tracking_id, orjson.dumps(document), JSON)


def _mms_mo(rng: random.Random, ctx: _Context) -> Postback:
    tracking_id = f"MMSMO{ctx.seed:x}x{ctx.message:x}"
    sender, short_code, subject = _recipient(rng), rng.choice(_SENDERS), rng.choice(_SUBJECTS)
    operator_id, _ = rng.choice(_OPERATORS)
    files = tuple(
        f"https://media.example.net/mo/{tracking_id}/{part}.{rng.choice(_MEDIA)}"
        for part in range(1, rng.randint(1, 3) + 1)
    )
    if ctx.wire == "v1_xml":
        body = _xml(
            [
                ("ORIGIN", "MMS_MO"),
                ("CODE", "N401"),
                ("FROM", sender),
                ("TO", short_code),
                ("KEYWORD", subject.split(" ")[0].lower() or "photo"),
                ("SUBJECT", subject),
                ("TRACKINGID", tracking_id),
                ("SPID", operator_id),
                ("TIMESTAMP", _v1_time(ctx.at)),
                ("CONTENT", files),
            ],
            declaration=False,
        )
        return Postback("MMS_MO/N401", ctx.wire, "inbound", tracking_id, body, XML)
    document: dict[str, object] = {
        "origin": "MMS_MO",
        "code": "N401",
        "from": sender,
        "to": short_code,
    }
    if subject:  # optional: absent when the sender gave none
        document["message-subject"] = subject
    document |= {
        "tracking-id": tracking_id,
        "timestamp": _v2_time(ctx.at),
        "content": [{"file": url} for url in files],
    }
    return Postback("MMS_MO/N401", ctx.wire, "inbound", tracking_id, orjson.dumps(document), JSON)


# ---------------------------------------------------------------------------------- malformed


def _malformed(rng: random.Random, seed: int, index: int, at: datetime) -> Postback:
    shape, make = rng.choice(_MALFORMED)
    tracking_id = f"BAD{seed:x}x{index:x}"
    body, content_type = make(rng, tracking_id, at)
    carried = tracking_id if tracking_id.encode() in body else None
    return Postback(f"malformed/{shape}", "malformed", "malformed", carried, body, content_type)


def _a_sms_report(tracking_id: str, at: datetime) -> dict[str, str]:
    return {
        "origin": "SMS_MT",
        "code": "N202",
        "sent-as": "SMS",
        "status": "Delivered",
        "from": "60856",
        "to": "14155550123",
        "tracking-id": tracking_id,
        "timestamp": _v2_time(at),
    }


def _truncated_json(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    body = orjson.dumps(_a_sms_report(tracking_id, at))
    return body[: rng.randrange(1, len(body) - 1)], JSON  # a connection cut mid-body


def _truncated_xml(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    nodes: list[_Node] = [("ORIGIN", "SMS_MT"), ("CODE", "N201"), ("TRACKINGID", tracking_id)]
    body = _xml(nodes, declaration=True)
    return body[: rng.randrange(1, len(body) - 1)], XML


def _missing_origin(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    document = _a_sms_report(tracking_id, at)
    del document["origin"]
    return orjson.dumps(document), JSON


def _missing_code(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    nodes: list[_Node] = [("ORIGIN", "SMS_MO"), ("FROM", "447700900123"), ("TO", "60856")]
    return _xml([*nodes, ("TEXT", "HELP"), ("TRANSACTIONID", tracking_id)], False), XML


def _api_error(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    code, info = rng.choice(
        [("E100", "Invalid request"), ("E104", "Authentication failed"), ("E108", "Parse error")]
    )
    return orjson.dumps({"status": "Failure", "error-code": code, "error-info": info}), JSON


def _json_array(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    return orjson.dumps([_a_sms_report(tracking_id, at)]), JSON


def _empty(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    return b"", JSON


def _whitespace(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    return b" \r\n\t \n", "text/plain"


def _garbage(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    # 0x9f can start neither UTF-8 text nor a JSON or XML document.
    return b"\x9f" + rng.randbytes(rng.randrange(8, 64)), BINARY


def _invalid_utf8(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    head = b'{"origin":"SMS_MO","code":"N211","message-text":"caf\xe9",'  # Latin-1 \xe9
    return head + b'"tracking-id":"' + tracking_id.encode() + b'"}', JSON


def _unclosed_tag(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    # The provider's own N201 example never closes FROM_MASK (postback-formats.md §4).
    head = "<?xml version='1.0'?><POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N201</CODE>"
    tail = f"<FROM_MASK><FROM_MASK><TRACKINGID>{tracking_id}</TRACKINGID></POSTBACK>"
    return (head + tail).encode(), XML


def _unknown_root(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    body = "<?xml version='1.0'?><RESPONSE><STATUS>Failure</STATUS><ERRORCODE>E108</ERRORCODE>"
    return (body + "</RESPONSE>").encode(), XML


def _doctype(rng: random.Random, tracking_id: str, at: datetime) -> tuple[bytes, str]:
    entities = '<!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">]>'
    body = f"<?xml version='1.0'?>{entities}<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE>N211</CODE>"
    return (body + "<TEXT>&a;</TEXT></POSTBACK>").encode(), XML


_Shape: TypeAlias = Callable[[random.Random, str, datetime], tuple[bytes, str]]
_MALFORMED: Final[Sequence[tuple[str, _Shape]]] = (
    ("truncated_json", _truncated_json),
    ("truncated_xml", _truncated_xml),
    ("missing_origin", _missing_origin),
    ("missing_code", _missing_code),
    ("api_error", _api_error),
    ("json_array", _json_array),
    ("empty", _empty),
    ("whitespace", _whitespace),
    ("garbage", _garbage),
    ("invalid_utf8", _invalid_utf8),
    ("unclosed_tag", _unclosed_tag),
    ("unknown_root", _unknown_root),
    ("doctype", _doctype),
)
MALFORMED_SHAPES: Final = tuple(shape for shape, _ in _MALFORMED)


# ------------------------------------------------------------------------------------ helpers

_Row = tuple[int, str, str, str, str, str]


def _pick(rng: random.Random, rows: Sequence[_Row]) -> _Row:
    return rng.choices(rows, [row[0] for row in rows])[0]


def _recipient(rng: random.Random) -> str:
    """International format, no "+" (postback-formats.md §1); UK ones from Ofcom's drama range."""
    if rng.random() < 0.1:
        return f"447700900{rng.randrange(1000):03d}"
    area, exchange = rng.choice(_AREA_CODES), rng.randrange(200, 1000)
    return f"1{area}{exchange}{rng.randrange(10_000):04d}"


def _aggregator_id(rng: random.Random) -> str:
    return "-".join(f"{rng.randrange(100_000):05d}" for _ in range(5))


def _b64(text: str) -> str:
    """Skycore's MT tracking ids look like base64 ("TU1TXzcwMTIzNDU2"), "=" padding included."""
    return base64.b64encode(text.encode()).decode()


def _v2_time(at: datetime, *, fraction: bool = True) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds" if fraction else "seconds")


def _v1_time(at: datetime) -> str:
    return at.astimezone(_V1_ZONE).isoformat(timespec="seconds")


def _xml(nodes: Sequence[_Node], declaration: bool) -> bytes:
    """<POSTBACK> with upper-case children; a tuple value becomes <FILE> children (CONTENT)."""
    parts = ["<?xml version='1.0'?><POSTBACK>" if declaration else "<POSTBACK>"]
    for name, value in nodes:
        if isinstance(value, tuple):
            files = "".join(f"<FILE>{escape(item)}</FILE>" for item in value)
            parts.append(f"<{name}>{files}</{name}>")
        else:
            parts.append(f"<{name}>{escape(value)}</{name}>")
    parts.append("</POSTBACK>")
    return "".join(parts).encode()
