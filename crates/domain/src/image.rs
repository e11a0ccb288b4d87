//! Profile images as the user aggregate records them: an id and a format.
//! The bytes live in an object store under [`ProfileImage::file_name`];
//! decoding, validation and re-encoding happen in the server.

use crate::id::ImageId;

/// The formats Roster accepts and stores (Clerk's: JPEG, PNG, GIF, WebP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Gif,
    Webp,
}

impl ImageFormat {
    pub const ALL: [Self; 4] = [Self::Jpeg, Self::Png, Self::Gif, Self::Webp];

    /// The file extension objects and URLs carry.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }

    /// The media type images of this format are served with.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
        }
    }

    pub fn from_extension(extension: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.extension() == extension)
    }
}

/// A stored profile image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProfileImage {
    pub id: ImageId,
    pub format: ImageFormat,
}

impl ProfileImage {
    /// `img_….png`: the object's name and the last segment of its URL.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.id, self.format.extension())
    }

    /// Parses a [`Self::file_name`]; `None` for anything else.
    pub fn parse_file_name(name: &str) -> Option<Self> {
        let (id, extension) = name.rsplit_once('.')?;
        Some(Self {
            id: ImageId::parse(id).ok()?,
            format: ImageFormat::from_extension(extension)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn file_names_round_trip_and_reject_anything_else() {
        let image = ProfileImage {
            id: ImageId::generate(Timestamp::from_millis(1_700_000_000_000)),
            format: ImageFormat::Webp,
        };
        let name = image.file_name();
        assert_eq!((&name[..4], &name[name.len() - 5..]), ("img_", ".webp"));
        assert_eq!(ProfileImage::parse_file_name(&name), Some(image.clone()));
        for bad in [
            "",
            "img_.png",
            &name.replace(".webp", ".svg"),
            &name.replace("img_", "user_"),
            &format!("{name}/x"),
            "../img_x.png",
        ] {
            assert_eq!(ProfileImage::parse_file_name(bad), None, "{bad}");
        }
    }
}
