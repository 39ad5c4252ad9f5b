//! # oxray-macros
//!
//! Procedural macros for oxray: `#[oxray::remote]`, `#[oxray::actor]` and `#[oxray::main]`.
//! Users reach them through the `oxray` crate, never directly.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{
    parse_macro_input, FnArg, GenericArgument, ImplItem, Item, ItemFn, ItemImpl, PathArguments,
    ReturnType, Type,
};

/// Makes a function callable as a remote task: keeps `f` as it is and adds a module `f` with
/// `f::remote(args..) -> oxray::Result<ObjectRef<R>>` and `f::options()`. Each argument may be a
/// value or a ref (`&ObjectRef<T>`) to an object holding the parameter's type. A parameter of
/// type `ObjectView<T>` reads its argument in place from the node's store. A function returning
/// `Result<T, E>` gives an `ObjectRef<T>`; its `Err` becomes `Error::TaskFailed`. An `async fn`
/// runs on a single-threaded tokio runtime in its worker thread (it may await refs, timers, I/O).
/// A function returning `impl Iterator<Item = T>` is a streaming task: `f::remote` gives an
/// `ObjectRefStream<T>`. `#[oxray::remote(num_returns = n)]` on a function returning a tuple of
/// `n` values (or a `Vec<T>` of `n`) gives a ref for each: `(ObjectRef<A>, ObjectRef<B>, ..)`
/// (or `Vec<ObjectRef<T>>`).
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut num_returns: Option<u64> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("num_returns") {
            let n: syn::LitInt = meta.value()?.parse()?;
            let n: u64 = n.base10_parse()?;
            if n < 2 {
                return Err(meta.error(
                    "num_returns must be at least 2 (every task has one return without it)",
                ));
            }
            num_returns = Some(n);
            Ok(())
        } else {
            Err(meta.error(
                "#[oxray::remote] takes only `num_returns = n`; set other options per call with \
                 f::options()",
            ))
        }
    });
    parse_macro_input!(attr with parser);
    let f = parse_macro_input!(item as ItemFn);
    match expand_remote(&f, num_returns) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// How a task with `num_returns = n` splits its value: the types of its returns (a tuple of
/// `n`), or one type for all (a `Vec<T>` of `n`).
enum Split {
    Tuple(Vec<Type>),
    Vec(Type),
}

fn split_of(ok_ty: &Type, n: u64) -> syn::Result<Split> {
    match ok_ty {
        Type::Tuple(t) if t.elems.len() as u64 == n => {
            Ok(Split::Tuple(t.elems.iter().cloned().collect()))
        }
        _ => match last_segment(ok_ty) {
            Some((ident, args)) if ident == "Vec" && args.len() == 1 => {
                Ok(Split::Vec(args[0].clone()))
            }
            _ => Err(syn::Error::new_spanned(
                ok_ty,
                format!(
                    "with num_returns = {n} the function returns a tuple of {n} values, or a \
                     `Vec<T>` of {n}: each becomes an object with a ref of its own"
                ),
            )),
        },
    }
}

/// The last path segment of a type and its angle-bracketed type arguments.
fn last_segment(ty: &Type) -> Option<(String, Vec<Type>)> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let args = match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((seg.ident.to_string(), args))
}

/// The type of the object a task's result becomes: `Vec<T>` for `VecInPlace<T>` (written in
/// place in the store), the type itself otherwise.
fn stored_type(ty: Type) -> Type {
    match last_segment(&ty) {
        Some((ident, args)) if ident == "VecInPlace" && args.len() == 1 => {
            let elem = &args[0];
            syn::parse_quote!(::std::vec::Vec<#elem>)
        }
        _ => ty,
    }
}

/// The owned type a borrowed parameter's users usually mean (`[f64]` → `Vec<f64>`, `str` →
/// `String`), for the error message.
fn owned_form(elem: &Type) -> String {
    match elem {
        Type::Slice(s) => {
            let inner = &s.elem;
            format!("Vec<{}>", quote!(#inner))
        }
        Type::Path(p) if p.path.is_ident("str") => "String".into(),
        other => quote!(#other).to_string(),
    }
}

/// `T` when `ret` is `impl Iterator<Item = T>` (a streaming task).
fn stream_item(ret: &Type) -> Option<Type> {
    let Type::ImplTrait(it) = ret else {
        return None;
    };
    it.bounds.iter().find_map(|b| {
        let syn::TypeParamBound::Trait(t) = b else {
            return None;
        };
        let seg = t.path.segments.last()?;
        if seg.ident != "Iterator" {
            return None;
        }
        let syn::PathArguments::AngleBracketed(a) = &seg.arguments else {
            return None;
        };
        a.args.iter().find_map(|g| match g {
            syn::GenericArgument::AssocType(at) if at.ident == "Item" => Some(at.ty.clone()),
            _ => None,
        })
    })
}

fn expand_remote(f: &ItemFn, num_returns: Option<u64>) -> syn::Result<Tokens> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "remote functions cannot be generic: workers look them up by name",
        ));
    }
    let vis = &f.vis;
    let name = &sig.ident;
    let mut decode = Vec::new();
    let mut params = Vec::new();
    let mut arg_names = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new_spanned(
                input,
                "remote functions cannot take self",
            ));
        };
        let ty = &*pt.ty;
        if let Type::Reference(r) = ty {
            let elem = &r.elem;
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "remote functions cannot take borrowed parameters: the value arrives from \
                     another process. Take it owned (`{}`), or read a stored object in place with \
                     `ObjectView<T>` (e.g. `xs: ObjectView<Vec<f64>>`, then `xs.as_slice()` for \
                     a `&[f64]`)",
                    owned_form(elem)
                ),
            ));
        }
        let arg = format_ident!("__arg{}", i);
        match last_segment(ty) {
            Some((ident, args)) if ident == "ObjectView" && args.len() == 1 => {
                let inner = &args[0];
                decode.push(quote! { let #arg = __args.view::<#inner>(#i)?; });
                params.push(quote! { #arg: impl ::oxray::IntoArg<#inner> });
            }
            _ => {
                decode.push(quote! { let #arg = __args.value::<#ty>(#i)?; });
                params.push(quote! { #arg: impl ::oxray::IntoArg<#ty> });
            }
        }
        arg_names.push(arg);
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let (ok_ty, fallible) = match last_segment(&ret) {
        Some((ident, args)) if ident == "Result" && !args.is_empty() => (args[0].clone(), true),
        _ => (ret.clone(), false),
    };
    let ok_ty = stored_type(ok_ty);
    let item_ty = stream_item(&ret);
    if item_ty.is_some() && sig.asyncness.is_some() {
        return Err(syn::Error::new_spanned(
            sig.asyncness,
            "a streaming task (returning `impl Iterator<Item = T>`) cannot be async",
        ));
    }
    let call = if sig.asyncness.is_some() {
        // Runs on the worker thread's async runtime (`oxray_core_worker::block_on_task`).
        quote! { ::oxray::__private::block_on_task(super::#name(#(#arg_names),*))? }
    } else {
        quote! { super::#name(#(#arg_names),*) }
    };
    if item_ty.is_some() && num_returns.is_some() {
        return Err(syn::Error::new_spanned(
            &ret,
            "a streaming task (returning `impl Iterator<Item = T>`) has no num_returns: each \
             item is a return of its own already",
        ));
    }
    let split = num_returns.map(|n| split_of(&ok_ty, n)).transpose()?;
    // A streaming task gives an `ObjectRefStream` of its items; one with several returns a
    // ref for each; others an `ObjectRef`.
    let (returns, submit) = match (&item_ty, &split, num_returns) {
        (Some(item), _, _) => (
            quote! { ::oxray::ObjectRefStream<#item> },
            quote! { ::oxray::__private::submit_stream(self.0, __args) },
        ),
        (None, Some(Split::Tuple(tys)), Some(n)) => {
            let takes = tys.iter().map(|_| quote! { __r.take() });
            (
                quote! { (#(::oxray::ObjectRef<#tys>),*) },
                quote! {
                    let mut __r = ::oxray::__private::submit_returns(self.0, __args, #n)?;
                    ::std::result::Result::Ok((#(#takes),*))
                },
            )
        }
        (None, Some(Split::Vec(elem)), Some(n)) => (
            quote! { ::std::vec::Vec<::oxray::ObjectRef<#elem>> },
            quote! {
                let mut __r = ::oxray::__private::submit_returns(self.0, __args, #n)?;
                ::std::result::Result::Ok((0..#n).map(|_| __r.take()).collect())
            },
        ),
        _ => (
            quote! { ::oxray::ObjectRef<#ok_ty> },
            quote! { ::oxray::__private::submit_task(self.0, __args) },
        ),
    };
    let value = if fallible {
        quote! {
            match #call {
                ::std::result::Result::Ok(v) => ::std::result::Result::Ok(v),
                ::std::result::Result::Err(e) => ::std::result::Result::Err(
                    ::oxray::__private::TaskError::App(::std::string::ToString::to_string(&e))),
            }
        }
    } else {
        quote! { ::std::result::Result::<_, ::oxray::__private::TaskError>::Ok(#call) }
    };
    let wrap = if item_ty.is_some() {
        quote! {
            ::std::result::Result::Ok(::std::boxed::Box::new(::oxray::__private::Items::new(#call)))
        }
    } else if let Some(split) = &split {
        let n = num_returns.unwrap_or(0);
        let parts = match split {
            Split::Tuple(tys) => {
                let idx = (0..tys.len()).map(syn::Index::from);
                quote! {
                    ::std::vec![#(::std::boxed::Box::new(__v.#idx) as ::std::boxed::Box<dyn ::oxray::__private::ReturnValue>),*]
                }
            }
            Split::Vec(_) => quote! {{
                if __v.len() as u64 != #n {
                    return ::std::result::Result::Err(::oxray::__private::TaskError::App(
                        ::std::format!("returned {} values; num_returns is {}", __v.len(), #n)));
                }
                __v.into_iter()
                    .map(|x| ::std::boxed::Box::new(x) as ::std::boxed::Box<dyn ::oxray::__private::ReturnValue>)
                    .collect()
            }},
        };
        quote! {{
            let __v = (#value)?;
            ::std::result::Result::Ok(::std::boxed::Box::new(::oxray::__private::Items::returns(#parts)))
        }}
    } else {
        quote! {
            match #value {
                ::std::result::Result::Ok(v) => ::std::result::Result::Ok(::std::boxed::Box::new(v)),
                ::std::result::Result::Err(e) => ::std::result::Result::Err(e),
            }
        }
    };
    let doc = format!("Remote calls of [`{name}`](fn@super::{name}).");
    let remote_doc = format!("Submits `{name}(..)` as a task; arguments are values or refs.");
    Ok(quote! {
        #f

        #[doc = #doc]
        #[allow(non_snake_case, unused_imports, clippy::module_inception)]
        #vis mod #name {
            use super::*;

            #[::oxray::__private::linkme::distributed_slice(::oxray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::oxray::__private::linkme)]
            static __OXRAY_REGISTER: ::oxray::__private::RemoteFunction =
                ::oxray::__private::RemoteFunction { name: ::std::module_path!(), invoke: __invoke };

            fn __invoke(
                __args: &::oxray::__private::TaskArgs<'_>,
            ) -> ::std::result::Result<
                ::std::boxed::Box<dyn ::oxray::__private::ReturnValue>,
                ::oxray::__private::TaskError,
            > {
                #(#decode)*
                #wrap
            }

            #[doc = #remote_doc]
            pub fn remote(#(#params),*) -> ::oxray::Result<#returns> {
                options().remote(#(#arg_names),*)
            }

            /// Options for one call: `options().num_cpus(2.0).remote(..)`.
            pub fn options() -> Options {
                Options(::oxray::TaskOptions::new(::std::module_path!()))
            }

            /// Options for one call of this function.
            #[derive(Debug, Clone)]
            pub struct Options(::oxray::TaskOptions);

            impl Options {
                /// CPUs the task holds while it runs (default 1).
                pub fn num_cpus(self, n: f64) -> Self { Options(self.0.num_cpus(n)) }
                /// A custom resource the task needs.
                pub fn resource(self, name: &str, amount: f64) -> Self {
                    Options(self.0.resource(name, amount))
                }
                /// Custom resources the task needs.
                pub fn resources<'a>(self, rs: impl ::std::iter::IntoIterator<Item = (&'a str, f64)>) -> Self {
                    Options(self.0.resources(rs))
                }
                /// Retries when the worker dies (default 3).
                pub fn max_retries(self, n: u32) -> Self { Options(self.0.max_retries(n)) }
                /// Also retry on panic or `Err`.
                pub fn retry_exceptions(self, yes: bool) -> Self { Options(self.0.retry_exceptions(yes)) }
                /// A name for the task.
                pub fn name(self, name: impl ::std::convert::Into<::std::string::String>) -> Self {
                    Options(self.0.name(name))
                }
                /// A streaming task makes at most `n` items ahead of those taken (0: no bound).
                pub fn stream_window(self, n: u64) -> Self { Options(self.0.stream_window(n)) }
                /// Where the task may run (`SchedulingStrategy::Spread`, `NodeAffinity`).
                pub fn scheduling_strategy(self, s: ::oxray::SchedulingStrategy) -> Self {
                    Options(self.0.scheduling_strategy(s))
                }
                /// Runs in placement group `pg`, in bundle `bundle` (`None`: any of its bundles).
                pub fn placement_group(self, pg: &::oxray::PlacementGroup, bundle: ::std::option::Option<usize>) -> Self {
                    Options(self.0.placement_group(pg, bundle))
                }
                #[doc = #remote_doc]
                pub fn remote(self, #(#params),*) -> ::oxray::Result<#returns> {
                    let __args = ::std::vec![#(::oxray::IntoArg::into_arg(#arg_names)),*];
                    #submit
                }
            }
        }
    })
}

/// Makes a struct or enum storable and passable by oxray: adds rkyv's `Archive`, `Serialize`
/// and `Deserialize` derives, with the crate path pointing at oxray's re-export (so the user's
/// crate needs no rkyv dependency of its own).
///
/// ```ignore
/// #[oxray::object]
/// #[derive(Debug, Clone, PartialEq)]
/// struct Sample { label: String, values: Vec<f64> }
/// ```
#[proc_macro_attribute]
pub fn object(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = Tokens::from(attr);
        return syn::Error::new_spanned(attr, "#[oxray::object] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as syn::DeriveInput);
    quote! {
        #[derive(::oxray::rkyv::Archive, ::oxray::rkyv::Serialize, ::oxray::rkyv::Deserialize)]
        #[rkyv(crate = ::oxray::rkyv)]
        #item
    }
    .into()
}

/// Runs `main` with oxray initialized: `oxray::init()` first (an embedded node, or the cluster
/// at `OXRAY_ADDRESS`), shut down when `main` returns. Worker processes never reach `main`.
#[proc_macro_attribute]
pub fn main(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut f = parse_macro_input!(item as ItemFn);
    let body = &f.block;
    let new_body: syn::Block = syn::parse_quote!({
        let __oxray_cluster = match ::oxray::init() {
            ::std::result::Result::Ok(c) => c,
            ::std::result::Result::Err(e) => {
                ::std::eprintln!("oxray: cannot start: {e}");
                ::std::process::exit(1);
            }
        };
        #body
    });
    *f.block = new_body;
    quote!(#f).into()
}

/// Makes a struct an actor. Put it on the struct (which it leaves as it is) and on its `impl`
/// block, which needs a constructor `fn new(..) -> Self`. It adds `T::remote(ctor args..)` and
/// `T::options()` (returning `ActorHandle<T>`), and a handle type `<T>Handle` with one method per
/// `&self` / `&mut self` method: `handle.method(args..)` submits a call and returns
/// `oxray::Result<ObjectRef<R>>`. Arguments are values or refs, as for tasks. The struct must be
/// `Send + Sync + 'static`.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[oxray::actor] takes no arguments; set options per actor with T::options()",
        )
        .to_compile_error()
        .into();
    }
    match parse_macro_input!(item as Item) {
        Item::Struct(s) => quote!(#s).into(),
        Item::Enum(e) => quote!(#e).into(),
        Item::Impl(imp) => match expand_actor_impl(&imp) {
            Ok(t) => t.into(),
            Err(e) => e.to_compile_error().into(),
        },
        other => {
            syn::Error::new_spanned(other, "#[oxray::actor] goes on a struct and its impl block")
                .to_compile_error()
                .into()
        }
    }
}

struct Params {
    decode: Vec<Tokens>,
    params: Vec<Tokens>,
    names: Vec<proc_macro2::Ident>,
}

fn params_of(sig: &syn::Signature) -> syn::Result<Params> {
    let mut p = Params {
        decode: Vec::new(),
        params: Vec::new(),
        names: Vec::new(),
    };
    let mut i = 0usize;
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else { continue };
        let ty = &*pt.ty;
        let arg = format_ident!("__arg{}", i);
        match last_segment(ty) {
            Some((ident, args)) if ident == "ObjectView" && args.len() == 1 => {
                let inner = &args[0];
                p.decode
                    .push(quote! { let #arg = __args.view::<#inner>(#i)?; });
                p.params
                    .push(quote! { #arg: impl ::oxray::IntoArg<#inner> });
            }
            _ => {
                p.decode
                    .push(quote! { let #arg = __args.value::<#ty>(#i)?; });
                p.params.push(quote! { #arg: impl ::oxray::IntoArg<#ty> });
            }
        }
        p.names.push(arg);
        i += 1;
    }
    Ok(p)
}

fn expand_actor_impl(imp: &ItemImpl) -> syn::Result<Tokens> {
    if imp.trait_.is_some() || !imp.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "#[oxray::actor] goes on the type's own (inherent, non-generic) impl block",
        ));
    }
    let self_ty = &imp.self_ty;
    let Some((type_name, _)) = last_segment(self_ty) else {
        return Err(syn::Error::new_spanned(self_ty, "expected a named type"));
    };
    let handle = format_ident!("{}Handle", type_name);
    let options = format_ident!("{}Options", type_name);
    let class = quote! { ::std::concat!(::std::module_path!(), "::", #type_name) };
    let mut ctor = None;
    let mut is_async_class = false;
    let mut registrations = Vec::new();
    let mut handle_methods = Vec::new();
    for item in &imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let sig = &f.sig;
        let name = &sig.ident;
        if !sig.generics.params.is_empty() {
            continue;
        }
        let receiver = sig.receiver();
        if receiver.is_none() {
            if name == "new" {
                ctor = Some(sig.clone());
            }
            continue;
        }
        let Some(recv) = receiver else { continue };
        if recv.reference.is_none() {
            return Err(syn::Error::new_spanned(
                recv,
                "actor methods take &self or &mut self",
            ));
        }
        let mutates = recv.mutability.is_some();
        let p = params_of(sig)?;
        let (decode, params, names) = (&p.decode, &p.params, &p.names);
        let ret: Type = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, t) => (**t).clone(),
        };
        let (ok_ty, fallible) = match last_segment(&ret) {
            Some((ident, args)) if ident == "Result" && !args.is_empty() => (args[0].clone(), true),
            _ => (ret.clone(), false),
        };
        let ok_ty = stored_type(ok_ty);
        let method_name = name.to_string();
        let call_fn = format_ident!("__oxray_call_{}", name);
        let reg = format_ident!("__OXRAY_METHOD_{}", name.to_string().to_uppercase());
        // An async method runs to completion on the worker thread's async runtime.
        let invoke = if sig.asyncness.is_some() {
            quote! { ::oxray::__private::block_on_task(__this.#name(#(#names),*)) }
        } else {
            quote! { ::std::result::Result::<_, ::oxray::__private::TaskError>::Ok(__this.#name(#(#names),*)) }
        };
        let access = if mutates {
            quote! { __inst.with_mut::<#self_ty, _>(|__this| #invoke)?? }
        } else {
            quote! { __inst.with_ref::<#self_ty, _>(|__this| #invoke)?? }
        };
        let wrap = if fallible {
            quote! {
                match #access {
                    ::std::result::Result::Ok(v) => ::std::result::Result::Ok(::std::boxed::Box::new(v)),
                    ::std::result::Result::Err(e) => ::std::result::Result::Err(
                        ::oxray::__private::TaskError::App(::std::string::ToString::to_string(&e))),
                }
            }
        } else {
            quote! { ::std::result::Result::Ok(::std::boxed::Box::new(#access)) }
        };
        let full =
            quote! { ::std::concat!(::std::module_path!(), "::", #type_name, "::", #method_name) };
        // `async fn(&self)`: also an entry point that runs interleaved on the actor's event
        // loop (arguments decoded first; the instance shared across the awaits).
        let shared_async = sig.asyncness.is_some() && !mutates;
        is_async_class |= shared_async;
        let async_fn = format_ident!("__oxray_call_async_{}", name);
        let call_async = if shared_async {
            quote! { ::std::option::Option::Some(#async_fn) }
        } else {
            quote! { ::std::option::Option::None }
        };
        if shared_async {
            let value = if fallible {
                quote! {
                    match __this.#name(#(#names),*).await {
                        ::std::result::Result::Ok(v) => ::std::result::Result::Ok(
                            ::std::boxed::Box::new(v) as ::std::boxed::Box<dyn ::oxray::__private::ReturnValue>),
                        ::std::result::Result::Err(e) => ::std::result::Result::Err(
                            ::oxray::__private::TaskError::App(::std::string::ToString::to_string(&e))),
                    }
                }
            } else {
                quote! {
                    ::std::result::Result::Ok(::std::boxed::Box::new(__this.#name(#(#names),*).await)
                        as ::std::boxed::Box<dyn ::oxray::__private::ReturnValue>)
                }
            };
            registrations.push(quote! {
                // The read guard is held across the method's awaits on purpose: it is what
                // shares the instance between interleaved calls, and a `&mut self` call waiting
                // for the lock makes new shared calls yield, not block (`ActorInstance::shared`).
                #[allow(clippy::await_holding_lock)]
                fn #async_fn(
                    __inst: &'static ::oxray::__private::ActorInstance,
                    __args: &::oxray::__private::TaskArgs<'_>,
                ) -> ::std::result::Result<
                    ::oxray::__private::LocalCall,
                    ::oxray::__private::TaskError,
                > {
                    #(#decode)*
                    ::std::result::Result::Ok(::std::boxed::Box::pin(async move {
                        let __guard = __inst.shared().await;
                        let __this = __guard.downcast_ref::<#self_ty>().ok_or_else(|| {
                            ::oxray::__private::TaskError::BadArgument(
                                "the actor hosted here is of another class".into())
                        })?;
                        #value
                    }))
                }
            });
        }
        registrations.push(quote! {
            #[::oxray::__private::linkme::distributed_slice(::oxray::__private::ACTOR_METHODS)]
            #[linkme(crate = ::oxray::__private::linkme)]
            static #reg: ::oxray::__private::ActorMethod = ::oxray::__private::ActorMethod {
                name: #full,
                call: #call_fn,
                call_async: #call_async,
            };

            fn #call_fn(
                __inst: &::oxray::__private::ActorInstance,
                __args: &::oxray::__private::TaskArgs<'_>,
            ) -> ::std::result::Result<
                ::std::boxed::Box<dyn ::oxray::__private::ReturnValue>,
                ::oxray::__private::TaskError,
            > {
                #(#decode)*
                #wrap
            }
        });
        let doc = format!("Calls `{type_name}::{method_name}` on the actor.");
        handle_methods.push(quote! {
            #[doc = #doc]
            pub fn #name(&self, #(#params),*) -> ::oxray::Result<::oxray::ObjectRef<#ok_ty>> {
                self.0.call(#full, ::std::vec![#(::oxray::IntoArg::into_arg(#names)),*])
            }
        });
    }
    let Some(ctor) = ctor else {
        return Err(syn::Error::new_spanned(
            self_ty,
            "an actor's impl block needs a constructor `fn new(..) -> Self`",
        ));
    };
    let p = params_of(&ctor)?;
    let (decode, params, names) = (&p.decode, &p.params, &p.names);
    // `fn new(..) -> Self`, or `-> Result<Self, E>`: an `Err` ends the actor (`ActorDied` at
    // its callers, with the error's text).
    let is_self = |t: &Type| {
        matches!(t, Type::Path(p) if p.path.is_ident("Self"))
            || last_segment(t).is_some_and(|(ident, args)| ident == type_name && args.is_empty())
    };
    let built = match &ctor.output {
        ReturnType::Type(_, t) if is_self(t) => quote! {
            ::std::result::Result::Ok(::std::boxed::Box::new(<#self_ty>::new(#(#names),*)))
        },
        ReturnType::Type(_, t)
            if matches!(last_segment(t), Some((ident, args)) if ident == "Result"
                && args.first().is_some_and(is_self)) =>
        {
            quote! {
                match <#self_ty>::new(#(#names),*) {
                    ::std::result::Result::Ok(v) => ::std::result::Result::Ok(::std::boxed::Box::new(v)),
                    ::std::result::Result::Err(e) => ::std::result::Result::Err(
                        ::oxray::__private::TaskError::App(::std::string::ToString::to_string(&e))),
                }
            }
        }
        other => {
            return Err(syn::Error::new_spanned(
                other,
                format!(
                    "an actor's constructor returns `Self` (or `{type_name}`), or \
                     `Result<Self, E>` whose `Err` ends the actor"
                ),
            ))
        }
    };
    // Async actors run up to 1000 `async fn(&self)` calls at once by default, as Ray's do.
    let default_concurrency: u32 = if is_async_class { 1000 } else { 1 };
    let handle_doc = format!(
        "Handle methods of the `{type_name}` actor (`ActorHandle<{type_name}>` derefs to it)."
    );
    let options_doc = format!("Options for creating a `{type_name}` actor.");
    Ok(quote! {
        #imp

        const _: () = {
            #[::oxray::__private::linkme::distributed_slice(::oxray::__private::ACTOR_CLASSES)]
            #[linkme(crate = ::oxray::__private::linkme)]
            static __OXRAY_CLASS: ::oxray::__private::ActorClass =
                ::oxray::__private::ActorClass {
                    name: #class,
                    construct: __oxray_construct,
                    is_async: #is_async_class,
                };

            fn __oxray_construct(
                __args: &::oxray::__private::TaskArgs<'_>,
            ) -> ::std::result::Result<
                ::std::boxed::Box<dyn ::std::any::Any + ::std::marker::Send + ::std::marker::Sync>,
                ::oxray::__private::TaskError,
            > {
                #(#decode)*
                #built
            }

            #(#registrations)*
        };

        impl ::oxray::Actor for #self_ty {
            const CLASS: &'static str = #class;
            type Handle = #handle;
        }

        #[doc = #handle_doc]
        #[derive(Clone)]
        pub struct #handle(::oxray::__private::RawActorHandle);

        impl ::std::convert::From<::oxray::__private::RawActorHandle> for #handle {
            fn from(raw: ::oxray::__private::RawActorHandle) -> Self { #handle(raw) }
        }

        impl ::std::convert::AsRef<::oxray::__private::RawActorHandle> for #handle {
            fn as_ref(&self) -> &::oxray::__private::RawActorHandle { &self.0 }
        }

        impl #handle {
            #(#handle_methods)*
        }

        #[doc = #options_doc]
        #[derive(Debug, Clone)]
        pub struct #options(::oxray::ActorOptions);

        impl #options {
            /// CPUs held while the actor lives (default 0).
            pub fn num_cpus(self, n: f64) -> Self { #options(self.0.num_cpus(n)) }
            /// A custom resource held while the actor lives.
            pub fn resource(self, name: &str, amount: f64) -> Self { #options(self.0.resource(name, amount)) }
            /// A name, unique among live actors of the namespace.
            pub fn name(self, name: impl ::std::convert::Into<::std::string::String>) -> Self { #options(self.0.name(name)) }
            /// The namespace of the name.
            pub fn namespace(self, ns: impl ::std::convert::Into<::std::string::String>) -> Self { #options(self.0.namespace(ns)) }
            /// Restarts after its process dies (-1: unlimited).
            pub fn max_restarts(self, n: i64) -> Self { #options(self.0.max_restarts(n)) }
            /// Re-sends of a call interrupted by a restart (-1: unlimited).
            pub fn max_task_retries(self, n: i64) -> Self { #options(self.0.max_task_retries(n)) }
            /// Methods that may run at once.
            pub fn max_concurrency(self, n: u32) -> Self { #options(self.0.max_concurrency(n)) }
            /// `Lifetime::Detached` to outlive the creator.
            pub fn lifetime(self, l: ::oxray::Lifetime) -> Self { #options(self.0.lifetime(l)) }
            /// With a name: return the live actor that has it, if any, instead of failing.
            pub fn get_if_exists(self, yes: bool) -> Self { #options(self.0.get_if_exists(yes)) }
            /// Where the actor may run (`SchedulingStrategy::Spread`, `NodeAffinity`).
            pub fn scheduling_strategy(self, s: ::oxray::SchedulingStrategy) -> Self { #options(self.0.scheduling_strategy(s)) }
            /// Runs in placement group `pg`, in bundle `bundle` (`None`: any of its bundles).
            pub fn placement_group(self, pg: &::oxray::PlacementGroup, bundle: ::std::option::Option<usize>) -> Self { #options(self.0.placement_group(pg, bundle)) }
            /// Creates the actor.
            pub fn remote(self, #(#params),*) -> ::oxray::Result<::oxray::ActorHandle<#self_ty>> {
                self.0.create::<#self_ty>(::std::vec![#(::oxray::IntoArg::into_arg(#names)),*])
            }
        }

        impl #self_ty {
            /// Creates the actor in a worker process of its own.
            pub fn remote(#(#params),*) -> ::oxray::Result<::oxray::ActorHandle<#self_ty>> {
                Self::options().remote(#(#names),*)
            }

            /// Options for creating the actor: `options().name(..).max_restarts(..).remote(..)`.
            pub fn options() -> #options {
                #options(::oxray::ActorOptions::new(<#self_ty as ::oxray::Actor>::CLASS)
                    .max_concurrency(#default_concurrency))
            }
        }
    })
}
