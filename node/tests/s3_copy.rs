//! The S3 store's object move (quarantine) against moto: one `CopyObject` below the threshold,
//! a multipart copy of `UploadPartCopy` ranges above it (forced here on a small object: S3 needs
//! it above 5 GiB), the bytes checked with boto3. A binary of its own: it sets the AWS
//! credentials in its environment, which no other test may be reading meanwhile.

mod common;

use common::s3::S3;
use common::*;
use wharf_node::config::{StoreConfig, StoreKind};
use wharf_node::store::s3::S3Store;

#[tokio::test(flavor = "multi_thread")]
async fn objects_move_by_one_copy_or_by_parts_and_leave_nothing_at_the_old_key() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let store = S3Store::connect(&StoreConfig {
        kind: StoreKind::S3,
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone(),
        force_path_style: true,
        ..StoreConfig::default()
    })
    .await
    .unwrap();

    // 12 MiB and a bit, in 5 MiB parts (S3's smallest): three UploadPartCopy ranges.
    let big = random_bytes(12 * MIB + 12_345, 41);
    let small = random_bytes(1_000, 42);
    for (key, data) in [("uploads/big", &big), ("uploads/small", &small)] {
        let path = dir.path().join(key.replace('/', "_"));
        std::fs::write(&path, data).unwrap();
        s3.boto(&format!(
            "s3.upload_file({:?}, {:?}, {:?})",
            path.display().to_string(),
            s3.bucket,
            key
        ));
    }
    let part = 5 * MIB as u64;
    store
        .move_object("uploads/big", "quarantine/uploads/big", part, part)
        .await
        .unwrap();
    store
        .move_object("uploads/small", "quarantine/uploads/small", part, part)
        .await
        .unwrap();

    let mut keys = s3.object_keys();
    keys.sort();
    assert_eq!(keys, ["quarantine/uploads/big", "quarantine/uploads/small"]);
    let etag = |key: &str| {
        s3.boto(&format!(
            "print(s3.head_object(Bucket={:?}, Key={:?})['ETag'])",
            s3.bucket, key
        ))
        .trim()
        .to_string()
    };
    // A multipart object's ETag ends in its number of parts; a copied one's does not.
    assert!(
        etag("quarantine/uploads/big").ends_with("-3\""),
        "{}",
        etag("quarantine/uploads/big")
    );
    assert!(!etag("quarantine/uploads/small").contains('-'));
    let copy = s3.object_bytes("quarantine/uploads/big", &dir.path().join("big.copy"));
    assert!(copy == big, "the multipart copy differs from the original");
    let copy = s3.object_bytes("quarantine/uploads/small", &dir.path().join("small.copy"));
    assert!(copy == small);
    assert_eq!(s3.multipart_uploads(), 0);

    // Moving again (a move done but not recorded) is Ok; moving what is nowhere is not.
    store
        .move_object("uploads/big", "quarantine/uploads/big", part, part)
        .await
        .unwrap();
    assert!(store
        .move_object("uploads/none", "quarantine/uploads/none", part, part)
        .await
        .is_err());
}
