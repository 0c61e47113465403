//! Fleet-wide push invalidation: when a secret rotates, every cache that holds it refreshes within
//! a second, through infrastructure you already run, with the TTL as the backstop.

mod announcement;

pub use self::announcement::{Announcement, AnnouncementError, MAX_ANNOUNCEMENT_BYTES};
