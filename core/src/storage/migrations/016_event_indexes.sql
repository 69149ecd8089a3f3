-- Member events of one user in one room, in the order this node stored them: a local user's
-- own latest membership choice is read from here (see `events::own_membership_drift`).
CREATE INDEX events_room_member ON events(room_id, state_key) WHERE type = 'm.room.member';

-- Rejected events of a room, counted to bound how many are kept.
CREATE INDEX events_rejected ON events(room_id) WHERE rejected = 1;
