-- Reserved: schema 5 is the workflows' migration.  This placeholder keeps the numbering
-- contiguous (jobd.migrations refuses gaps) and is replaced by that migration.
SELECT 1;
