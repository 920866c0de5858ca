"""kombu's Redis transport, with a screen for bytes it cannot turn into a message.

kombu's Redis transport keeps each queue as a list of JSON envelopes. The worker's main
process pops one with BRPOP, decodes the JSON (kombu.transport.redis Channel._brpop_read),
builds a kombu Message from it (the envelope's properties, delivery tag and headers, its body
decoded from base64) and records it in the unacked hash, all inside the event loop: bytes
that are not JSON, a JSON list, an envelope without its properties or with a body that is
not base64 raise there, and the worker exits (or, for a missing key, reconnects and drops
it). Nothing Celery offers runs before that point.

So the channel screens each BRPOP reply where redis-py parses it (a response callback, the
client's own extension point) with the same steps kombu is about to take. A message that
fails them is kept as a dead letter (orchestration.broker.rejection), and the reply becomes an empty
one, which kombu's loop takes as "nothing arrived yet". The message is already off its list
(BRPOP popped it) and never reached the unacked hash, so no restore brings it back.

Named by CELERY_BROKER_TRANSPORT (settings/config.py) for every redis:// and rediss:// broker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

if TYPE_CHECKING:
    pass

# Models are imported inside the methods: kombu may load the transport before Django's apps.


class Channel(kombu_redis.Channel):
    def _create_client(self, asynchronous: bool = False):
        client = super()._create_client(asynchronous)
        if asynchronous:  # the client kombu consumes with (Channel.client): the one that sends BRPOP
            parse = client.response_callbacks.get("BRPOP")
            client.set_response_callback("BRPOP", functools.partial(self._screen_brpop_reply, parse))
        return client

    def _screen_brpop_reply(self, parse: Callable | None, response: Any, **options: Any) -> Any:
        reply = parse(response, **options) if parse else response
        if not reply:
            return reply  # BRPOP timed out: nothing arrived
        key, item = reply
        refusal = self.why_unreadable(item)
        if refusal is None:
            return reply
        from orchestration.broker import rejection

        reason, detail, message_id = refusal
        rejection.reject(queue=self.queue_of(key), reason=reason, detail=detail, body=item, message_id=message_id)
        return None  # _brpop_read takes an empty reply for "nothing yet" and polls again

    def queue_of(self, key: bytes | str) -> str:
        """The queue a BRPOP key belongs to: kombu keeps priorities as suffixed lists."""
        name = bytes_to_str(key).rsplit(self.sep, 1)[0]
        return name.removeprefix(self.global_keyprefix or "")

    def why_unreadable(self, item: bytes | str) -> tuple[str, str, str] | None:
        """(reason, detail, message id) when kombu could not make a Message of ``item``; else None.

        The steps are kombu's own: its JSON decoding, the keys its virtual Message and its
        QoS (the unacked hash) read, and the Message itself, which decodes the body.
        """
        from orchestration.models import RejectionReason

        try:
            payload = loads(bytes_to_str(item))
        except Exception as error:  # JSONDecodeError, or kombu's own object hook refusing a value
            return RejectionReason.NOT_JSON, f"not JSON: {error}", ""
        if not isinstance(payload, dict):
            return RejectionReason.NOT_AN_ENVELOPE, f"a JSON {type(payload).__name__}, not an envelope object", ""
        headers = payload.get("headers")
        if headers is not None and not isinstance(headers, dict):
            return RejectionReason.NOT_AN_ENVELOPE, f"the envelope's headers are a {type(headers).__name__}", ""
        message_id = (headers or {}).get("id")
        message_id = message_id if isinstance(message_id, str) else ""
        properties = payload.get("properties")
        if not isinstance(properties, dict):
            return RejectionReason.NOT_AN_ENVELOPE, "the envelope has no properties object", message_id
        if not isinstance(properties.get("delivery_tag"), str):
            return RejectionReason.NOT_AN_ENVELOPE, "the envelope's properties have no delivery_tag string", message_id
        delivery_info = properties.get("delivery_info")
        if not isinstance(delivery_info, dict) or not {"exchange", "routing_key"} <= delivery_info.keys():
            return (
                RejectionReason.NOT_AN_ENVELOPE,
                "the envelope's properties have no delivery_info with exchange and routing_key",
                message_id,
            )
        try:
            self.Message(payload, channel=self)
        except Exception as error:
            encoding = properties.get("body_encoding")
            return RejectionReason.UNDECODABLE_BODY, f"the body does not decode as {encoding!r}: {error}", message_id
        return None


class Transport(kombu_redis.Transport):
    Channel = Channel
