-- Invites of users of other servers whose server has not yet received them
-- (`PUT /_matrix/federation/v2/invite`). The invite event is already in the room; a row here
-- only says that the invitee's server, which may be switched off for days, still has to be
-- told. Rows go when that server accepts or refuses the invite, or when the invite is no
-- longer the invitee's membership.
CREATE TABLE invite_outbox (
    id          INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    event_id    TEXT NOT NULL UNIQUE,
    created_ts  INTEGER NOT NULL
) STRICT;
CREATE INDEX invite_outbox_destination ON invite_outbox(destination, id);
