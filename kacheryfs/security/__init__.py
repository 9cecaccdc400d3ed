"""Who may talk to the node: its ed25519 keys, the client auth code, and peer request signatures.

`keys` creates and loads the node's key pair (private files with mode 0600) and signs/verifies in
the original daemon's encodings; `client_auth` keeps the rotating client auth code; `peer_auth`
signs requests to peers and checks requests from them against the channel's members.

May import: kacheryfs.config and kachery_client's pure modules only.
"""
