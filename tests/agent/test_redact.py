"""The redactor knows a secret in the forms peers echo it: base64 (basic auth), percent-encoded, JSON-escaped,
as a credential header's value, and as one segment of a secret URL."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

from agent.plugin.redact import MASK, Redactor, url_parts
from checks.http import HttpCheck

SECRET = "s3cr3t/pa+ss word?"


def test_redactor_secret_base64_every_variant_masked():
    redact = Redactor([SECRET])
    raw = SECRET.encode()
    for form in (base64.b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("="),
                 base64.urlsafe_b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert redact(f"got {form} back") == f"got {MASK} back", form


def test_redactor_secret_inside_longer_base64_masked_at_any_offset():
    redact = Redactor([SECRET])
    for prefix in ("", "a", "ab", "abc"):
        blob = base64.b64encode(f"{prefix}{SECRET} and more".encode()).decode()
        assert MASK in redact(blob), prefix
        assert blob not in redact(blob)


def test_redactor_secret_percent_and_json_forms_masked():
    redact = Redactor([SECRET])
    lower_hex = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(SECRET, safe=""))
    for form in (quote(SECRET, safe=""), lower_hex, quote(SECRET), quote_plus(SECRET), json.dumps(SECRET)[1:-1],
                 json.dumps(SECRET)[1:-1].replace("/", "\\/")):
        assert redact(f"x {form} y") == f"x {MASK} y", form


def test_redactor_credential_headers_masked_whatever_they_hold():
    redact = Redactor()
    text = ("HTTP/1.1 401\r\nSet-Cookie: session=abc123; Path=/\r\nX-Other: kept\r\n"
            "authorization: Bearer eyJhbGciOi\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"
            'echo {"Cookie": "sid=42", "Authorization":"Basic Zm9v"}')
    out = redact(text)
    for value in ("abc123", "eyJhbGciOi", "Zm9vOmJhcg==", "sid=42", "Basic Zm9v"):
        assert value not in out, value
    assert "X-Other: kept" in out and "Set-Cookie: ***\r\n" in out and '"Cookie": "***"' in out


def test_redactor_refresh_learns_the_basic_auth_pair_of_an_http_check():
    options = HttpCheck.Options(name="api", type="http", url="http://127.0.0.1/", every=60,
                                username="monitor", password=SECRET)
    redact = Redactor()
    redact.refresh(options)
    header = "Authorization: Basic " + base64.b64encode(f"monitor:{SECRET}".encode()).decode()
    token = base64.b64encode(f"monitor:{SECRET}".encode()).decode()
    assert redact(f"server said {token}") == f"server said {MASK}"
    assert redact(header) == "Authorization: ***"


def test_redactor_secret_url_segments_and_query_values_masked_route_words_kept():
    url = "https://hooks.example.test/services/T0AB12CD/B0EF34GH/XoXsecretSegment?token=q-value-77&v=2"
    assert url_parts(url) == {"T0AB12CD", "B0EF34GH", "XoXsecretSegment", "q-value-77"}
    redact = Redactor([url])
    assert redact("token XoXsecretSegment rejected") == f"token {MASK} rejected"
    assert redact("workspace T0AB12CD, query q-value-77") == f"workspace {MASK}, query {MASK}"
    assert redact("3 services failed") == "3 services failed", "a route word is not a secret"


def test_redactor_database_url_keeps_its_database_name():
    redact = Redactor(["postgresql://app:pw-Secret-9@db.internal/app_db2"])
    assert redact("restore into app_db2 done") == "restore into app_db2 done"


def test_redactor_shortcut_for_plain_text_masks_exactly_what_the_patterns_mask():
    """Text without any credential word skips the patterns: over a corpus of near misses, case variants and
    characters whose case folding differs between re and str.lower, the answer is the patterns' own."""
    import random

    from agent.plugin.redact import mask_credentials
    pieces = ["/srv/x modified 3s ago", "Authorization: Basic dXNlcjpwYXNz", "AUTHORIZATION:x", "cookie: a=b",
              "Set-Cookie:z", "http://u:p@h/", "HTTPS://USER:PW@HOST", ":/", "//", "password=x", "PassWd: y",
              "pwd=1", "TOKEN 2", "token=3", "Secret:4", "api_key=5", "APIKEY=6", "routing_key=7", "to\u212aen=8",
              "\u017fecret=9", "pa\u017f\u017fword=10", "p\u0130wd", "cooki", "tokn", "k", "=", " ", "\n", "é", "'q'",
              "\"q\""]
    rng = random.Random(14)
    corpus = pieces + ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    redact = Redactor()
    assert [redact(text) for text in corpus] == [mask_credentials(text) for text in corpus]
