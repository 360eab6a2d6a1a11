"""Real-server test peers (Dovecot, Postfix, smtp-sink, a TCP proxy) for the test harness."""
