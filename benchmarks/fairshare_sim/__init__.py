"""A discrete-event simulator of one shared work pool driven by the fair-share policy
(``mlops.fairshare.policy``) and by what Prefect offers without it, with its scores and
plots. Used by ``make bench-fairshare`` and the tests; matplotlib is a dev dependency."""
