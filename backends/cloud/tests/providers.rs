//! Google Cloud KMS and Azure Key Vault keys through the official SDKs,
//! against local HTTPS servers written from the providers' published REST
//! references (no local implementation of either service exists). Each
//! test asserts the requests the SDK sends (paths, bodies, credentials) and
//! covers throttling, rejected credentials and permission errors; every
//! signature is verified against the key's public half.
//!
//! These check our use of the SDKs against the published API, not against
//! the live services.

mod fake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use fake::{Fake, Request, Response};
use keyless_keys::memory::{KeyMaterial, PublicKey};
use keyless_keys::{Hash, Operation, PrivateKey, SharedKey};
use keyless_pki::KeyType;
use serde_json::json;

/// A key the fake service holds: signs digests as the service would.
struct Held {
    material: KeyMaterial,
    spki: Vec<u8>,
    pem: String,
}

fn hold(kind: KeyType) -> Held {
    let pair = kind.generate().unwrap();
    let material = KeyMaterial::parse(pair.serialize_pem().as_bytes(), "held.key".as_ref()).unwrap();
    Held {
        material,
        spki: rcgen::PublicKeyData::subject_public_key_info(&pair),
        pem: pair.public_key_pem(),
    }
}

impl Held {
    fn sign(&self, op: Operation, input: &[u8]) -> Vec<u8> {
        self.material.instantiate().unwrap().perform(op, input).unwrap()
    }

    fn verify(&self, op: Operation, input: &[u8], signature: &[u8]) {
        PublicKey::from_spki(&self.spki)
            .unwrap()
            .verify(op, input, signature)
            .expect("the signature verifies against the key's public half");
    }
}

fn one(keys: Vec<SharedKey>) -> SharedKey {
    assert_eq!(keys.len(), 1);
    keys.into_iter().next().unwrap()
}

fn sign(key: &SharedKey, op: Operation, input: &[u8]) -> Result<Vec<u8>, keyless_keys::CryptoError> {
    key.instantiate().unwrap().perform(op, input)
}

const GCP_PREFIX: &str = "projects/site/locations/global/keyRings/tls/cryptoKeys";

/// Google Cloud KMS: getPublicKey at load (SKI from its PEM, the algorithm
/// decides what is served), asymmetricSign with the digest, a service
/// account's self-signed JWT on every request; throttling retried,
/// rejected credentials, permission denied, a disabled version and a key
/// made for encryption each reported with their cause.
#[test]
fn google_cloud_kms_through_the_sdk() {
    fake::trust();
    let account = KeyType::Rsa2048.generate().unwrap();
    let account_public = rcgen::PublicKeyData::subject_public_key_info(&account);
    let keys: Arc<HashMap<&str, (Held, &str)>> = Arc::new(HashMap::from([
        ("p256", (hold(KeyType::EcdsaP256), "EC_SIGN_P256_SHA256")),
        ("pss", (hold(KeyType::Rsa2048), "RSA_SIGN_PSS_2048_SHA256")),
        ("busy", (hold(KeyType::EcdsaP256), "EC_SIGN_P256_SHA256")),
        ("garbled", (hold(KeyType::EcdsaP256), "EC_SIGN_P256_SHA256")),
        ("expired", (hold(KeyType::EcdsaP256), "EC_SIGN_P256_SHA256")),
        ("off", (hold(KeyType::EcdsaP256), "EC_SIGN_P256_SHA256")),
        ("secret", (hold(KeyType::EcdsaP256), "GOOGLE_SYMMETRIC_ENCRYPTION")),
    ]));
    let throttled = Arc::new(AtomicUsize::new(0));
    let garbled = Arc::new(AtomicUsize::new(0));
    let fake = {
        let (keys, throttled, garbled) = (keys.clone(), throttled.clone(), garbled.clone());
        Fake::start(move |req: &Request| {
            let error = |code: u16, status: &str, message: &str| {
                Response::json(
                    code,
                    json!({"error": {"code": code, "status": status, "message": message}}),
                )
            };
            let Some(rest) = req.path().strip_prefix(&format!("/v1/{GCP_PREFIX}/")) else {
                return error(404, "NOT_FOUND", "no such path");
            };
            let (key, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let name = format!("{GCP_PREFIX}/{key}/cryptoKeyVersions/1");
            if key == "denied" {
                return error(
                    403,
                    "PERMISSION_DENIED",
                    "Permission 'cloudkms.cryptoKeyVersions.viewPublicKey' denied",
                );
            }
            let Some((held, algorithm)) = keys.get(key) else {
                return error(404, "NOT_FOUND", "CryptoKeyVersion not found");
            };
            match (req.method.as_str(), tail) {
                ("GET", "cryptoKeyVersions/1/publicKey") => Response::json(
                    200,
                    json!({"name": name, "pem": held.pem, "algorithm": algorithm, "protectionLevel": "HSM"}),
                ),
                ("POST", "cryptoKeyVersions/1:asymmetricSign") => {
                    if key == "busy" && throttled.fetch_add(1, Ordering::SeqCst) < 2 {
                        return error(
                            429,
                            "RESOURCE_EXHAUSTED",
                            "Quota exceeded for quota metric 'Cryptographic requests'",
                        );
                    }
                    if key == "expired" {
                        return error(
                            401,
                            "UNAUTHENTICATED",
                            "Request had invalid authentication credentials.",
                        );
                    }
                    if key == "off" {
                        return error(
                            400,
                            "FAILED_PRECONDITION",
                            "CryptoKeyVersion is not enabled, current state is: DISABLED.",
                        );
                    }
                    let body = req.json();
                    let digest = STANDARD
                        .decode(body["digest"]["sha256"].as_str().unwrap_or_default())
                        .unwrap();
                    // int64 travels as a JSON string (proto3 JSON mapping).
                    let sent_crc = body["digestCrc32c"].as_str().and_then(|c| c.parse::<u32>().ok());
                    let op = if algorithm.starts_with("EC") {
                        Operation::Ecdsa(Hash::Sha256)
                    } else {
                        Operation::RsaPss(Hash::Sha256)
                    };
                    let signature = held.sign(op, &digest);
                    let mut signature_crc = crc32c::crc32c(&signature);
                    if key == "garbled" && garbled.fetch_add(1, Ordering::SeqCst) == 0 {
                        signature_crc ^= 1;
                    }
                    Response::json(
                        200,
                        json!({
                            "name": name,
                            "signature": STANDARD.encode(signature),
                            "signatureCrc32c": signature_crc.to_string(),
                            "verifiedDigestCrc32c": sent_crc == Some(crc32c::crc32c(&digest)),
                        }),
                    )
                }
                _ => error(404, "NOT_FOUND", "no such method"),
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("service-account.json");
    std::fs::write(
        &credentials,
        json!({
            "type": "service_account",
            "project_id": "site",
            "private_key_id": "key-1",
            "private_key": account.serialize_pem(),
            "client_email": "keyless@site.iam.gserviceaccount.com",
            "client_id": "1234",
            "token_uri": format!("{}/token", fake.url()),
        })
        .to_string(),
    )
    .unwrap();
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &credentials);
    std::env::set_var("KEYLESS_GCP_KMS_ENDPOINT", fake.url());
    let options = keyless_cloud::Options::default();
    let uri = |key: &str| format!("{GCP_PREFIX}/{key}/cryptoKeyVersions/1");

    // Loaded: the SKI is the public key's, and it serves what it was made for.
    let p256 = one(keyless_cloud::load(&uri("p256"), &options).unwrap());
    let (held, _) = &keys["p256"];
    let (ski, _) = keyless_keys::PublicKeyInfo::from_spki(p256.public().algorithm, held.spki.clone())
        .map(|p| (p.ski, p.cert_digest))
        .unwrap();
    assert_eq!(p256.public().ski, ski);
    let digest = [0x5a; 32];
    let signature = sign(&p256, Operation::Ecdsa(Hash::Sha256), &digest).unwrap();
    held.verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature);
    let instance = p256.instantiate().unwrap();
    let offload = instance.offload().unwrap();
    assert!(
        !offload.supports(Operation::Ecdsa(Hash::Sha384)),
        "made for ECDSA-SHA256 only"
    );

    let pss = one(keyless_cloud::load(&uri("pss"), &options).unwrap());
    let signature = sign(&pss, Operation::RsaPss(Hash::Sha256), &digest).unwrap();
    keys["pss"]
        .0
        .verify(Operation::RsaPss(Hash::Sha256), &digest, &signature);
    assert!(sign(&pss, Operation::RsaPkcs1(Hash::Sha256), &digest).is_err());

    // Throttled twice, then signed within the deadline.
    let busy = one(keyless_cloud::load(&uri("busy"), &options).unwrap());
    let signature = sign(&busy, Operation::Ecdsa(Hash::Sha256), &digest).unwrap();
    keys["busy"]
        .0
        .verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature);
    assert_eq!(throttled.load(Ordering::SeqCst), 3);

    // A signature whose CRC32C does not match is discarded and asked again.
    let key = one(keyless_cloud::load(&uri("garbled"), &options).unwrap());
    let signature = sign(&key, Operation::Ecdsa(Hash::Sha256), &digest).unwrap();
    keys["garbled"]
        .0
        .verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature);
    assert_eq!(garbled.load(Ordering::SeqCst), 2);

    // Failures that retrying cannot fix: said at once, with their cause.
    let expired = one(keyless_cloud::load(&uri("expired"), &options).unwrap());
    let e = sign(&expired, Operation::Ecdsa(Hash::Sha256), &digest).unwrap_err();
    assert!(e.0.contains("credentials rejected"), "{e}");
    let off = one(keyless_cloud::load(&uri("off"), &options).unwrap());
    let e = sign(&off, Operation::Ecdsa(Hash::Sha256), &digest).unwrap_err();
    assert!(e.0.contains("key disabled"), "{e}");
    for (key, says) in [
        ("denied", "permission denied"),
        ("secret", "GoogleSymmetricEncryption"),
        ("missing", "key not found"),
    ] {
        let e = keyless_cloud::load(&uri(key), &options).unwrap_err().to_string();
        assert!(e.contains(&uri(key)) && e.contains(says), "{key}: {e}");
    }

    // What the SDK sent: the digest as asymmetricSign's `digest.sha256`,
    // and a JWT signed by the service account on every request.
    let requests = fake.requests();
    let signs: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path() == format!("/v1/{}:asymmetricSign", uri("p256")))
        .collect();
    assert_eq!(signs.len(), 1);
    assert_eq!(signs[0].method, "POST");
    assert_eq!(signs[0].json()["digest"]["sha256"], STANDARD.encode(digest));
    assert_eq!(signs[0].json()["digestCrc32c"], crc32c::crc32c(&digest).to_string());
    for r in &requests {
        let token = r
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_else(|| panic!("{} {} has no bearer token", r.method, r.target));
        let claims = verify_jwt(token, &account_public);
        assert_eq!(claims["iss"], "keyless@site.iam.gserviceaccount.com");
        assert!(
            claims["scope"].as_str().unwrap_or_default().contains("cloud-platform")
                || claims["aud"].as_str().unwrap_or_default().contains("cloudkms"),
            "{claims}"
        );
    }
}

/// An RS256 JWT's claims, after checking its signature with `spki`.
fn verify_jwt(token: &str, spki: &[u8]) -> serde_json::Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let signed = format!("{}.{}", parts[0], parts[1]);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signed.as_bytes());
    PublicKey::from_spki(spki)
        .unwrap()
        .verify(
            Operation::RsaPkcs1(Hash::Sha256),
            digest.as_ref(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .expect("the JWT is signed by the service account's key");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// Azure Key Vault: the SDK's challenge (an unauthenticated first request,
/// 401 with the vault's resource), a client-secret token from the tenant's
/// token endpoint, keys get at load (SKI from the JSON web key), sign with
/// the digest, r || s re-encoded as DER; throttling retried, a forbidden
/// key, a disabled version and an encryption key reported with their cause.
#[test]
fn azure_key_vault_through_the_sdk() {
    fake::trust();
    let keys: Arc<HashMap<&str, Held>> = Arc::new(HashMap::from([
        ("tls", hold(KeyType::EcdsaP256)),
        ("rsa", hold(KeyType::Rsa2048)),
        ("busy", hold(KeyType::EcdsaP384)),
        ("readonly", hold(KeyType::EcdsaP256)),
        ("off", hold(KeyType::EcdsaP256)),
        ("enc", hold(KeyType::Rsa2048)),
    ]));
    // The application's certificate, for the certificate credential: a
    // PKCS#12 file made by the openssl binary, as an operator would.
    let dir = tempfile::tempdir().unwrap();
    let certificate_key = KeyType::Rsa2048.generate().unwrap();
    let certificate_spki = rcgen::PublicKeyData::subject_public_key_info(&certificate_key);
    let certificate = rcgen::CertificateParams::new(vec!["keyless-app".to_string()])
        .unwrap()
        .self_signed(&certificate_key)
        .unwrap();
    std::fs::write(dir.path().join("app.crt"), certificate.pem()).unwrap();
    std::fs::write(dir.path().join("app.key"), certificate_key.serialize_pem()).unwrap();
    let p12 = dir.path().join("app.p12");
    let made = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:p12-s3cret", "-in"])
        .arg(dir.path().join("app.crt"))
        .arg("-inkey")
        .arg(dir.path().join("app.key"))
        .arg("-out")
        .arg(&p12)
        .status()
        .expect("the openssl binary");
    assert!(made.success());
    let throttled = Arc::new(AtomicUsize::new(0));
    // Tokens issued, by number, with when they expire: they live 2 s here
    // so the test can see the SDK replace an expired one.
    let tokens: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
    let fake = {
        let (keys, throttled, tokens) = (keys.clone(), throttled.clone(), tokens.clone());
        Fake::start(move |req: &Request| {
            let error = |status: u16, code: &str, message: &str| {
                Response::json(status, json!({"error": {"code": code, "message": message}}))
            };
            if req.path() == format!("/{TENANT}/oauth2/v2.0/token") {
                let form = String::from_utf8_lossy(&req.body).to_string();
                let by_secret = form.contains("client_secret=s3cret");
                let by_certificate = form_value(&form, "client_assertion")
                    .is_some_and(|jwt| assertion_verifies(&jwt, &certificate_spki));
                if !(by_secret || by_certificate) || !form.contains("grant_type=client_credentials") {
                    return error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.");
                }
                let mut issued = tokens.lock().unwrap();
                issued.push(std::time::Instant::now() + std::time::Duration::from_secs(2));
                return Response::json(
                    200,
                    json!({"token_type": "Bearer", "expires_in": 2, "ext_expires_in": 2, "access_token": format!("token-{}", issued.len() - 1)}),
                );
            }
            let valid = req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer token-"))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| tokens.lock().unwrap().get(n).copied())
                .is_some_and(|expires| std::time::Instant::now() < expires);
            if !valid {
                return Response::json(401, json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}}))
                    .with_header(
                        "www-authenticate",
                        &format!("Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"https://vault.azure.net\""),
                    );
            }
            let segments: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
            let (name, version, action) = match segments[..] {
                ["keys", name, version] => (name, version, ""),
                ["keys", name, version, "sign"] => (name, version, "sign"),
                _ => return error(404, "NotFound", "no such path"),
            };
            let Some(held) = keys.get(name).filter(|_| version == "v1") else {
                return error(
                    404,
                    "KeyNotFound",
                    &format!("A key with (name/id) {name} was not found in this key vault."),
                );
            };
            let public = PublicKey::from_spki(&held.spki).unwrap();
            if action.is_empty() {
                let ops = if name == "enc" {
                    json!(["encrypt", "decrypt"])
                } else {
                    json!(["sign", "verify"])
                };
                let mut jwk = json!({"kid": format!("https://site.vault.azure.net/keys/{name}/v1"), "key_ops": ops});
                let (x_or_n, y_or_e) = jwk_parts(&held.spki);
                if matches!(public.algorithm(), keyless_keys::KeyAlgorithm::Rsa { .. }) {
                    jwk["kty"] = json!("RSA-HSM");
                    jwk["n"] = json!(URL_SAFE_NO_PAD.encode(x_or_n));
                    jwk["e"] = json!(URL_SAFE_NO_PAD.encode(y_or_e));
                } else {
                    jwk["kty"] = json!("EC-HSM");
                    jwk["crv"] = json!(if name == "busy" { "P-384" } else { "P-256" });
                    jwk["x"] = json!(URL_SAFE_NO_PAD.encode(x_or_n));
                    jwk["y"] = json!(URL_SAFE_NO_PAD.encode(y_or_e));
                }
                return Response::json(200, json!({"key": jwk, "attributes": {"enabled": name != "off"}}));
            }
            if name == "readonly" {
                return error(
                    403,
                    "Forbidden",
                    "The user, group or application does not have keys sign permission on key vault.",
                );
            }
            if name == "busy" && throttled.fetch_add(1, Ordering::SeqCst) < 2 {
                return error(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received.",
                )
                .with_header("retry-after", "0");
            }
            let body = req.json();
            let digest = URL_SAFE_NO_PAD
                .decode(body["value"].as_str().unwrap_or_default())
                .unwrap();
            let (op, raw) = match body["alg"].as_str().unwrap_or_default() {
                "ES256" => (Operation::Ecdsa(Hash::Sha256), true),
                "ES384" => (Operation::Ecdsa(Hash::Sha384), true),
                "RS256" => (Operation::RsaPkcs1(Hash::Sha256), false),
                "PS256" => (Operation::RsaPss(Hash::Sha256), false),
                other => return error(400, "BadParameter", &format!("alg {other}")),
            };
            let mut signature = held.sign(op, &digest);
            if raw {
                signature = der_to_raw(&signature, if name == "busy" { 48 } else { 32 });
            }
            Response::json(
                200,
                json!({"kid": format!("https://site.vault.azure.net/keys/{name}/v1"), "value": URL_SAFE_NO_PAD.encode(signature)}),
            )
        })
    };
    std::env::set_var("AZURE_TENANT_ID", TENANT);
    std::env::set_var("AZURE_CLIENT_ID", "0b3b4a3e-0000-4000-8000-000000000001");
    std::env::set_var("AZURE_CLIENT_SECRET", "s3cret");
    std::env::set_var("AZURE_AUTHORITY_HOST", fake.url());
    std::env::set_var("KEYLESS_AZURE_KEYVAULT_ENDPOINT", fake.url());
    let options = keyless_cloud::Options::default();
    let uri = |key: &str| format!("https://site.vault.azure.net/keys/{key}/v1");
    let digest = [0x33; 32];

    let tls = one(keyless_cloud::load(&uri("tls"), &options).unwrap());
    let signature = sign(&tls, Operation::Ecdsa(Hash::Sha256), &digest).unwrap();
    keys["tls"].verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature);
    let rsa = one(keyless_cloud::load(&uri("rsa"), &options).unwrap());
    for op in [Operation::RsaPkcs1(Hash::Sha256), Operation::RsaPss(Hash::Sha256)] {
        let signature = sign(&rsa, op, &digest).unwrap();
        keys["rsa"].verify(op, &digest, &signature);
    }
    let busy = one(keyless_cloud::load(&uri("busy"), &options).unwrap());
    let signature = sign(&busy, Operation::Ecdsa(Hash::Sha384), &[7; 48]).unwrap();
    keys["busy"].verify(Operation::Ecdsa(Hash::Sha384), &[7; 48], &signature);
    assert_eq!(throttled.load(Ordering::SeqCst), 3);

    // The token expires; the next request is still signed (the SDK gets a
    // new token, by itself or after the vault's 401 challenge).
    let issued = tokens.lock().unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let signature = sign(&tls, Operation::Ecdsa(Hash::Sha256), &digest).unwrap();
    keys["tls"].verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature);
    assert!(tokens.lock().unwrap().len() > issued, "no new token after expiry");

    let readonly = one(keyless_cloud::load(&uri("readonly"), &options).unwrap());
    let e = sign(&readonly, Operation::Ecdsa(Hash::Sha256), &digest).unwrap_err();
    assert!(e.0.contains("permission denied"), "{e}");
    for (key, says) in [
        ("off", "key disabled"),
        ("enc", "do not include sign"),
        ("gone", "key not found"),
    ] {
        let e = keyless_cloud::load(&uri(key), &options).unwrap_err().to_string();
        assert!(e.contains(&uri(key)) && e.contains(says), "{key}: {e}");
    }

    // The certificate credential: a client assertion signed by the key in
    // the PKCS#12 file (checked by the token endpoint), then signing.
    std::env::remove_var("AZURE_CLIENT_SECRET");
    std::env::set_var("AZURE_CLIENT_CERTIFICATE_PATH", &p12);
    std::env::set_var("AZURE_CLIENT_CERTIFICATE_PASSWORD", "p12-s3cret");
    let before = fake.requests().len();
    let by_certificate = one(keyless_cloud::load(&uri("tls"), &options).unwrap());
    let signature = sign(&by_certificate, Operation::Ecdsa(Hash::Sha256), &digest).unwrap();
    keys["tls"].verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature);
    let asserted = fake.requests()[before..]
        .iter()
        .filter(|r| r.path().ends_with("/oauth2/v2.0/token"))
        .filter_map(|r| form_value(&String::from_utf8_lossy(&r.body), "client_assertion"))
        .count();
    assert!(asserted > 0, "no token request with a client assertion");

    // What the SDK sent: a token request with the client secret for the
    // vault's scope, then the sign call with the digest and algorithm.
    let requests = fake.requests();
    let token = requests
        .iter()
        .find(|r| r.path().ends_with("/oauth2/v2.0/token"))
        .expect("a token request");
    let form = String::from_utf8_lossy(&token.body);
    assert!(
        form.contains("scope=https%3A%2F%2Fvault.azure.net%2F.default"),
        "{form}"
    );
    assert!(
        form.contains("client_id=0b3b4a3e-0000-4000-8000-000000000001"),
        "{form}"
    );
    let signs: Vec<&Request> = requests.iter().filter(|r| r.path() == "/keys/tls/v1/sign").collect();
    let signed = signs.iter().find(|r| r.header("authorization").is_some()).unwrap();
    assert_eq!(signed.json()["alg"], "ES256");
    assert_eq!(signed.json()["value"], URL_SAFE_NO_PAD.encode(digest));
    assert!(signed.target.contains("api-version="), "{}", signed.target);
}

/// A value of an `application/x-www-form-urlencoded` body.
fn form_value(form: &str, name: &str) -> Option<String> {
    form.split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .map(|v| v.replace("%2E", ".").replace("%2D", "-").replace("%5F", "_"))
}

/// Whether a client assertion (RS256 JWT) is signed by the key of `spki`
/// and names the test's application.
fn assertion_verifies(jwt: &str, spki: &[u8]) -> bool {
    std::panic::catch_unwind(|| verify_jwt(jwt, spki))
        .is_ok_and(|claims| claims["sub"] == "0b3b4a3e-0000-4000-8000-000000000001")
}

/// (x, y) of an EC key or (n, e) of an RSA key, from its SPKI.
fn jwk_parts(spki: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    match info.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => (
            rsa.modulus.iter().copied().skip_while(|b| *b == 0).collect(),
            rsa.exponent.to_vec(),
        ),
        x509_parser::public_key::PublicKey::EC(point) => {
            let bytes = point.data();
            let half = (bytes.len() - 1) / 2;
            (bytes[1..1 + half].to_vec(), bytes[1 + half..].to_vec())
        }
        other => panic!("{other:?}"),
    }
}

/// DER ECDSA signature to the fixed-size r || s Key Vault returns.
fn der_to_raw(der: &[u8], size: usize) -> Vec<u8> {
    use x509_parser::der_parser::ber::BerObject;
    let (_, seq) = x509_parser::der_parser::parse_der(der).unwrap();
    let ints: Vec<&BerObject> = seq.as_sequence().unwrap().iter().collect();
    let mut out = Vec::new();
    for int in ints {
        let bytes = int.as_slice().unwrap();
        let bytes: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        out.extend(std::iter::repeat_n(0, size - bytes.len()));
        out.extend(bytes);
    }
    out
}
