"""Who is connecting: tokens, the session, ``?id=``, browser origins, and refusing a handshake."""
