"""Features on Feast: the store's configuration, point-in-time training sets and online
materialisation (the features stage), and online lookups (predict-by-entity).

With ``feature_repo`` (which only declares the Feast objects), the only package that talks
to Feast. May import ``mlops.config``, ``mlops.atomic_files``, ``mlops.locks``,
``mlops.data.storage`` and ``feature_repo``.
"""
