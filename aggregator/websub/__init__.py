"""WebSub (W3C Recommendation, 2018), the subscriber's side.

`discovery` [pure] finds a source's hub and topic (HTTP `Link` headers, then the feed's own
links); `signature` [pure] checks a content distribution's `X-Hub-Signature`; `rules`
[pure] decides what a subscription needs next (subscribe, renew, expire, unsubscribe) and
what a hub's verification of intent is answered; `subscriber` does the talking: requests
to hubs, the callback endpoint, pushes through the poll path.
"""
