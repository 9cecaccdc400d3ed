"""The HTTP edge: the node's client API (kachery-client 1.2.0's and ours) and its peer API.

Holds the ASGI app and its auth middleware (`app`), the handlers of each route family
(`client_routes`, `feed_routes`, `task_routes`, `peer_routes`, `data_routes`), the request schemas
(`schemas`) and the one mapping of errors to HTTP statuses (`errors`). What people and Prometheus
see: `status_page` (+ `templates/`), `status_data` (the one snapshot of the node behind the page,
/ui/status.json, the extras of /stats and /metrics' storage gauges), `gateway`, `access` (who may
see them) and `request_metrics`. `range_response` sends a /downloadFileData range, `disconnect`
stops a wait whose client hung up, `streaming` is the base of every streamed answer, and
`connections` bounds a stop (cuts the connections still open when the grace ends). Handlers parse a request,
call the Node and format the answer: no logic lives here.

May import: kacheryfs.node and everything below it, kachery_client's pure modules.
Imported by: kacheryfs.daemon, and kacheryfs.cli_data (the offline commands call data_routes'
handlers). Nothing below the edge imports this package.
"""
