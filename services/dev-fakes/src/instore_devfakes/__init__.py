"""Local fakes of the systems around the gateway's ``POST /sessions`` (development and tests only).

- a local identity system (IMS) that mints colleague JWTs and publishes its JWKS;
- a fake of InStore's (non-public) auth API that turns tenant id + connection key + user
  id into a user access token, with test knobs to make it fail or be slow.
"""
