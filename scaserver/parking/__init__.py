"""tsilo-style call parking (push-and-parking.md section 6): a pure engine that keeps an
INVITE alive while pushed devices wake up and adds a branch for each one that registers."""
