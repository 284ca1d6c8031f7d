"""Who is connecting: identity backends (tokens, the session, ``?id=``, a site's own), browser origins, refusals."""
