-- Run once by the postgres image on an empty data volume
-- (docker-compose.yml mounts it into /docker-entrypoint-initdb.d).
-- Same databases scripts/services.sh creates for the non-Docker setup.
CREATE DATABASE coupon_db;
CREATE DATABASE point_db;
CREATE DATABASE timesale_db;
CREATE DATABASE gateway_db;
