-- Relations of a room by type, for listing its threads by latest reply without reading
-- every event of the room.
CREATE INDEX events_room_relations ON events(room_id, rel_type, relates_to, stream)
    WHERE relates_to IS NOT NULL;
