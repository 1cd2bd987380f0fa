"""`python -m simulator`: a provider that posts to your postback URL the way the real one does.

One keep-alive connection, one postback at a time, a 10 s answer deadline, a retry about five
minutes after anything but a timely 200, at most five retries (docs/simulator.md). The traffic
is a realistic mix generated here (`mix`), the retry queue lives in `delivery`, the HTTP client
in `connection`, and `check` reads the events topic back to prove every acknowledged
notification became exactly one event.

    mix.py         PURE: the postbacks of a run, from a seed
    connection.py  one HTTP/1.1 keep-alive connection, reopened when the server closes it
    delivery.py    the provider's queue: attempts, retry delays, given-up postbacks
    check.py       events topic -> missing and duplicated notifications
    report.py      PURE: the numbers of a run, as JSON or a table
    cli.py         arguments, exit status
"""
