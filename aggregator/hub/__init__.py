"""The built-in WebSub hub (W3C Recommendation, 2018) for the feeds we publish.

Pure rules: `topics` (which published files are topics, their URLs and `Link` headers),
`requests` (a subscription request read and checked), `addresses` (which callback
addresses are refused), `rules` (leases, signatures, retries). I/O: `client` (a callback
resolved once, checked, and connected to at that address), `subscribe` (the `/websub`
endpoint's work: checks, then intent verified in the background), `deliver` (after a
publish, the changed documents to every subscriber), `service` (the one object the daemon
holds). Subscriptions live in the store (`aggregator.store.hub`).
"""
